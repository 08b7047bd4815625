/**
 * Every compression Nix offers for `nix copy --to http://…?compression=…`: the server
 * detects the method from the bytes, verifies the NAR inside, and Nix substitutes it back.
 * Methods narwhal cannot verify are refused with 415 and a message naming the ones it can.
 * Each test runs with both clients (Nix 2.8 on the host, 2.26 in the trixie root).
 */
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import path from 'node:path'
import { buildClosure, netrcFile, nixKeyPair, tempDir, testEachClient } from '../helpers/nix.js'
import { startServer } from '../helpers/server.js'

const VERIFIED: Array<[string, string]> = [
  ['xz', '.nar.xz'], ['zstd', '.nar.zst'], ['bzip2', '.nar.bz2'], ['br', '.nar.br'], ['none', '.nar'], ['gzip', '.nar']
]

for (const [method, extension] of VERIFIED) {
  testEachClient(`compression=${method}: pushed, verified, substituted`, async (t, client) => {
    const key = await nixKeyPair('test-uploader-1')
    const server = await startServer(t, { trustedKeys: [key.publicKey] })
    const closure = await buildClosure({ client })
    await client.nixOk(['copy', '--to', `${server.url}?secret-key=${key.secretFile}&compression=${method}`, closure.top],
      { config: [`netrc-file = ${netrcFile((await server.token('push')))}`] })
    const narinfo = await (await fetch(`${server.url}/${path.basename(closure.top).slice(0, 32)}.narinfo`)).text()
    assert.match(narinfo, new RegExp(`\nCompression: ${method}\n`))
    assert.match(narinfo, new RegExp(`\nURL: nar/[0-9a-z]{52}${extension.replaceAll('.', '\\.')}\n`))
    const store = tempDir('narwhal-store-')
    await client.nixOk(['copy', '--from', server.url, '--to', store, closure.top], { config: [`trusted-public-keys = ${key.publicKey}`] })
    assert.equal(readFileSync(path.join(store, closure.top, 'dep-ref'), 'utf8').trim(), closure.dep)
  })
}

for (const method of ['lz4', 'lzip']) {
  testEachClient(`compression=${method}: refused with 415, nothing stored`, async (t, client) => {
    const key = await nixKeyPair('test-uploader-1')
    const server = await startServer(t, { trustedKeys: [key.publicKey] })
    const closure = await buildClosure({ client })
    const result = await client.nix(['copy', '--to', `${server.url}?secret-key=${key.secretFile}&compression=${method}`, closure.top],
      { config: [`netrc-file = ${netrcFile((await server.token('push')))}`] })
    assert.notEqual(result.code, 0)
    assert.match(result.stderr, new RegExp(`NARWHAL_UNSUPPORTED_COMPRESSION: NAR file is compressed with ${method}`))
    assert.deepEqual(await server.storedFiles(), [])
  })
}
