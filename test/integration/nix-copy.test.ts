/**
 * The real Nix client is the judge: `nix copy --to` pushes a closure (references, real files)
 * with a netrc token and a secret key, and Nix substitutes, lists and verifies it back.
 *
 * Each test runs with both clients (Nix 2.8 on the host, 2.26 in the trixie root).
 */
import assert from 'node:assert/strict'
import { existsSync, readFileSync } from 'node:fs'
import path from 'node:path'
import { buildClosure, netrcFile, nixKeyPair, run, runOk, tempDir, testEachClient, type NixClient } from '../helpers/nix.js'
import { startServer } from '../helpers/server.js'

interface PathInfoJson { path: string, narHash: string, narSize: number, signatures?: string[] }

/**
 * `nix path-info --json` changed shape between the clients: 2.8 prints an array of objects with
 * a `path` field, 2.26 an object keyed by store path. Asserts each client's shape; returns a list.
 */
function pathInfos (client: NixClient, json: string): PathInfoJson[] {
  const parsed = JSON.parse(json) as unknown
  if (client.version === '2.8') {
    assert.ok(Array.isArray(parsed), 'Nix 2.8 prints an array')
    return parsed as PathInfoJson[]
  }
  assert.ok(parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed), 'Nix 2.26 prints an object keyed by path')
  return Object.entries(parsed as Record<string, Omit<PathInfoJson, 'path'>>).map(([p, info]) => ({ ...info, path: p }))
}

testEachClient('nix copy pushes a closure; nix copy --from, nix-store -r, path-info and store verify read it back', async (t, client) => {
  const key = await nixKeyPair('test-uploader-1')
  const server = await startServer(t, { trustedKeys: [key.publicKey] })
  const netrc = netrcFile((await server.token('push')))
  const closure = await buildClosure({ dataBytes: 2 * 1024 * 1024, client })

  await client.nixOk(['copy', '--to', `${server.url}?secret-key=${key.secretFile}`, closure.top], { config: [`netrc-file = ${netrc}`] })

  for (const storePath of closure.all) {
    const hash = path.basename(storePath).slice(0, 32)
    const response = await fetch(`${server.url}/${hash}.narinfo`)
    assert.equal(response.status, 200, `${storePath} has a narinfo`)
    const text = await response.text()
    assert.match(text, new RegExp(`^StorePath: ${storePath}\n`))
    assert.match(text, /\nSig: test-uploader-1:/)
  }

  // What Nix itself says the cache holds: the whole closure, with the uploader's signature.
  const infos = pathInfos(client, await client.nixOk(['path-info', '--json', '--recursive', '--store', server.url, closure.top]))
  assert.deepEqual(infos.map(i => i.path).sort(), [...closure.all].sort())
  for (const info of infos) assert.ok(info.signatures?.some(s => s.startsWith('test-uploader-1:')), `${info.path} is signed`)
  const local = pathInfos(client, await client.nixOk(['path-info', '--json', '--recursive', closure.top]))
  for (const info of infos) {
    assert.equal(info.narHash, local.find(l => l.path === info.path)?.narHash, `NarHash of ${info.path} matches the local store`)
  }

  const trust = [`trusted-public-keys = ${key.publicKey}`]
  await client.nixOk(['store', 'verify', '--recursive', '--store', server.url, closure.top], { config: trust })

  // Substitute into two empty stores, the way a developer machine would.
  const storeA = tempDir('narwhal-store-a-')
  await client.nixOk(['copy', '--from', server.url, '--to', storeA, closure.top], { config: trust })
  assert.equal(readFileSync(path.join(storeA, closure.top, 'dep-ref'), 'utf8').trim(), closure.dep)
  assert.ok(existsSync(path.join(storeA, closure.data, 'random.bin')))

  const storeB = tempDir('narwhal-store-b-')
  await client.ok('nix-store', ['--store', storeB, '--realise', closure.top,
    '--option', 'substituters', server.url, '--option', 'trusted-public-keys', key.publicKey])
  assert.equal(readFileSync(path.join(storeB, closure.data, 'sub', 'text.txt'), 'utf8'), 'narwhal test data\n'.repeat(1000))
  await client.nixOk(['store', 'verify', '--recursive', '--store', storeB, closure.top], { config: trust })
})

testEachClient('a second nix copy of the same closure uploads nothing and succeeds', async (t, client) => {
  const key = await nixKeyPair('test-uploader-1')
  const server = await startServer(t, { trustedKeys: [key.publicKey] })
  const netrc = netrcFile((await server.token('push')))
  const closure = await buildClosure({ client })
  const to = `${server.url}?secret-key=${key.secretFile}`
  await client.nixOk(['copy', '--to', to, closure.top], { config: [`netrc-file = ${netrc}`] })
  const before = await server.storedFiles()
  await client.nixOk(['copy', '--to', to, closure.top], { config: [`netrc-file = ${netrc}`] })
  assert.deepEqual(await server.storedFiles(), before)
})

testEachClient('substitution refuses a cache whose key the client does not trust', async (t, client) => {
  const key = await nixKeyPair('test-uploader-1')
  const server = await startServer(t, { trustedKeys: [key.publicKey] })
  const closure = await buildClosure({ client })
  await client.nixOk(['copy', '--to', `${server.url}?secret-key=${key.secretFile}`, closure.top],
    { config: [`netrc-file = ${netrcFile((await server.token('push')))}`] })
  const other = await nixKeyPair('someone-else-1')
  const store = tempDir('narwhal-store-')
  const result = await client.nix(['copy', '--from', server.url, '--to', store, closure.top], { config: [`trusted-public-keys = ${other.publicKey}`] })
  assert.notEqual(result.code, 0)
  assert.match(result.stderr, /lacks a valid signature|not signed|trusted/)
})

testEachClient('nix store copy-log uploads a build log and nix log reads it from the cache', async (t, client) => {
  const key = await nixKeyPair('test-uploader-1')
  const server = await startServer(t, { trustedKeys: [key.publicKey] })
  const netrc = netrcFile((await server.token('push')))
  const closure = await buildClosure({ client })
  await client.nixOk(['copy', '--to', `${server.url}?secret-key=${key.secretFile}`, closure.top], { config: [`netrc-file = ${netrc}`] })
  await client.nixOk(['store', 'copy-log', '--to', server.url, closure.top], { config: [`netrc-file = ${netrc}`] })

  const response = await fetch(`${server.url}/log/${path.basename(closure.drv)}`)
  assert.equal(response.status, 200)
  assert.match(await response.text(), /building top/)

  // A fresh store has no local log, so `nix log` must fetch it from the substituter.
  const store = tempDir('narwhal-store-')
  const trust = [`trusted-public-keys = ${key.publicKey}`, `substituters = ${server.url}`]
  await client.nixOk(['copy', '--from', server.url, '--to', store, closure.top], { config: trust })
  const log = await client.nixOk(['log', '--store', store, closure.top], { config: trust })
  assert.match(log, /building top/)
})

testEachClient('nix copy without a token is refused and stores nothing', async (t, client) => {
  const key = await nixKeyPair('test-uploader-1')
  const server = await startServer(t, { trustedKeys: [key.publicKey] })
  const closure = await buildClosure({ client })
  const result = await client.nix(['copy', '--to', `${server.url}?secret-key=${key.secretFile}`, closure.top])
  assert.notEqual(result.code, 0)
  assert.match(result.stderr, /401|NARWHAL_UNAUTHORIZED/)
  assert.deepEqual(await server.storedFiles(), [])
  assert.equal((await server.cache.metadata.narinfos.count()), 0)
})

testEachClient('nix copy of unsigned paths is refused: no narinfo is stored', async (t, client) => {
  const key = await nixKeyPair('test-uploader-1')
  const server = await startServer(t, { trustedKeys: [key.publicKey] })
  const closure = await buildClosure({ client })
  const result = await client.nix(['copy', '--to', server.url, closure.top], { config: [`netrc-file = ${netrcFile((await server.token('push')))}`] })
  assert.notEqual(result.code, 0)
  assert.match(result.stderr, /NARWHAL_SIGNATURE_REJECTED: narinfo field Sig: no signature by a trusted uploader key/)
  assert.equal((await server.cache.metadata.narinfos.count()), 0)
})

testEachClient('nix copy signed by a key the server does not trust is refused', async (t, client) => {
  const trusted = await nixKeyPair('test-uploader-1')
  const untrusted = await nixKeyPair('intruder-1')
  const server = await startServer(t, { trustedKeys: [trusted.publicKey] })
  const closure = await buildClosure({ client })
  const result = await client.nix(['copy', '--to', `${server.url}?secret-key=${untrusted.secretFile}`, closure.top],
    { config: [`netrc-file = ${netrcFile((await server.token('push')))}`] })
  assert.notEqual(result.code, 0)
  assert.match(result.stderr, /NARWHAL_SIGNATURE_REJECTED/)
  assert.equal((await server.cache.metadata.narinfos.count()), 0)
})

testEachClient('a read token cannot push', async (t, client) => {
  const key = await nixKeyPair('test-uploader-1')
  const server = await startServer(t, { trustedKeys: [key.publicKey] })
  const closure = await buildClosure({ client })
  const result = await client.nix(['copy', '--to', `${server.url}?secret-key=${key.secretFile}`, closure.top],
    { config: [`netrc-file = ${netrcFile((await server.token('read')))}`] })
  assert.notEqual(result.code, 0)
  assert.match(result.stderr, /NARWHAL_FORBIDDEN/)
  assert.deepEqual(await server.storedFiles(), [])
})

testEachClient('a server with no trusted key refuses narinfos and says how to configure one', async (t, client) => {
  const key = await nixKeyPair('test-uploader-1')
  const server = await startServer(t)
  const closure = await buildClosure({ client })
  const result = await client.nix(['copy', '--to', `${server.url}?secret-key=${key.secretFile}`, closure.top],
    { config: [`netrc-file = ${netrcFile((await server.token('push')))}`] })
  assert.notEqual(result.code, 0)
  assert.match(result.stderr, /NARWHAL_NO_TRUSTED_KEY: .*--trusted-key/)
})

testEachClient('keys generated by narwhal keygen work with nix copy and Nix verification', async (t, client) => {
  const dir = tempDir('narwhal-keygen-')
  const secret = path.join(dir, 'secret')
  const pub = path.join(dir, 'public')
  await runOk('node', ['dist/src/cli/main.js', 'keygen', 'narwhal-made-1', '--secret-out', secret, '--public-out', pub])
  const publicKey = readFileSync(pub, 'utf8')
  const server = await startServer(t, { trustedKeys: [publicKey] })
  const closure = await buildClosure({ client })
  await client.nixOk(['copy', '--to', `${server.url}?secret-key=${secret}`, closure.top], { config: [`netrc-file = ${netrcFile((await server.token('push')))}`] })
  await client.nixOk(['store', 'verify', '--recursive', '--store', server.url, closure.top], { config: [`trusted-public-keys = ${publicKey}`] })
  const again = await run('node', ['dist/src/cli/main.js', 'keygen', 'x', '--secret-out', secret, '--public-out', pub])
  assert.notEqual(again.code, 0, 'keygen never overwrites an existing key')
})
