/**
 * The pusher against a real narwhal server and the real Nix store: what it uploads must be what
 * Nix substitutes back, with only the pusher's public key trusted.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { chmodSync, chownSync, copyFileSync, existsSync, readFileSync } from 'node:fs'
import { createServer } from 'node:http'
import path from 'node:path'
import { inspect } from 'node:util'
import { closureInfo, topologicalOrder } from '../../src/pusher/closure.js'
import { dumpCompressed } from '../../src/pusher/nar-file.js'
import { pushClosure, type PushOptions } from '../../src/pusher/push-closure.js'
import { TransientError } from '../../src/pusher/retry.js'
import { loadSecretKeys } from '../../src/pusher/signer.js'
import { CacheClient } from '../../src/pusher/uploader.js'
import { encodeNix32 } from '../../src/nix/nix32.js'
import { buildClosure, nixEnv, nixKeyPair, nixOk, runOk, tempDir, testEachClient } from '../helpers/nix.js'
import { startServer } from '../helpers/server.js'
import { addStorePath } from '../helpers/upload.js'

function options (client: CacheClient, secretFile: string, extra: Partial<PushOptions> = {}): PushOptions {
  return {
    client,
    keys: loadSecretKeys([secretFile]),
    tmpDir: tempDir('narwhal-push-tmp-'),
    compression: 'zstd',
    concurrency: 3,
    skipSignedBy: [],
    batchNarBytes: 256 * 1024,
    batchMaxBytes: 8 * 1024 * 1024,
    requestAttempts: 2,
    backoff: { baseMs: 50, maxMs: 200 },
    ...extra
  }
}

for (const mode of ['multipart batches', 'plain PUTs', 'xz, plain PUTs'] as const) {
  test(`push a closure (${mode}); Nix substitutes it into an empty store trusting only the pusher's key`, async (t) => {
    const key = await nixKeyPair('pusher-test-1')
    const server = await startServer(t, { trustedKeys: [key.publicKey] })
    const client = new CacheClient(server.url, (await server.token('push')))
    t.after(() => client.close())
    const closure = await buildClosure({ dataBytes: mode === 'multipart batches' ? 64 * 1024 : 1024 * 1024 })
    const infos = await closureInfo([closure.top])
    assert.deepEqual(infos.map(i => i.path).sort(), [...closure.all].sort())
    const extra: Partial<PushOptions> = mode === 'multipart batches' ? {} : { batchNarBytes: 0 }
    if (mode === 'xz, plain PUTs') extra.compression = 'xz'
    const progress: number[] = []
    const result = await pushClosure(infos, options(client, key.secretFile, { ...extra, onProgress: p => progress.push(p.pathsDone) }))
    assert.deepEqual(result.failed, [])
    assert.equal(result.uploaded.length, 3)
    assert.equal(result.alreadyPresent, 0)
    assert.equal(progress.at(-1), 3)
    for (const p of closure.all) {
      const text = await (await fetch(`${server.url}/${path.basename(p).slice(0, 32)}.narinfo`)).text()
      assert.match(text, new RegExp(`Compression: ${mode.startsWith('xz') ? 'xz' : 'zstd'}\n`))
      assert.match(text, /\nSig: pusher-test-1:/)
    }
    const store = tempDir('narwhal-store-')
    await nixOk(['copy', '--from', server.url, '--to', store, closure.top], { config: [`trusted-public-keys = ${key.publicKey}`] })
    assert.equal(readFileSync(path.join(store, closure.top, 'dep-ref'), 'utf8').trim(), closure.dep)
    assert.ok(existsSync(path.join(store, closure.data, 'random.bin')))

    const again = await pushClosure(infos, options(client, key.secretFile, extra))
    assert.equal(again.uploaded.length, 0, 'the second push asks and uploads nothing')
    assert.equal(again.alreadyPresent, 3)
  })
}

testEachClient('push uncompressed (compression none): one large NAR streamed from the store, the rest batched; Nix substitutes and verifies them', async (t, nix) => {
  const key = await nixKeyPair('pusher-test-1')
  const server = await startServer(t, { trustedKeys: [key.publicKey] })
  const client = new CacheClient(server.url, (await server.token('push')))
  t.after(() => client.close())
  // The data path's NAR (2 MiB) is above batchNarBytes: PUT as it is read; the other two go in a batch.
  const closure = await buildClosure({ dataBytes: 2 * 1024 * 1024 })
  const infos = await closureInfo([closure.top])
  const result = await pushClosure(infos, options(client, key.secretFile, { compression: 'none' }))
  assert.deepEqual(result.failed, [])
  assert.equal(result.uploaded.length, 3)
  assert.equal(result.bytesSent, infos.reduce((n, i) => n + i.narSize, 0), 'the bytes sent are the NARs themselves')
  for (const info of infos) {
    const text = await (await fetch(`${server.url}/${path.basename(info.path).slice(0, 32)}.narinfo`)).text()
    const hash = encodeNix32(info.narHash)
    assert.match(text, new RegExp(`\nURL: nar/${hash}\\.nar\nCompression: none\nFileHash: sha256:${hash}\nFileSize: ${info.narSize}\n`))
  }
  const store = tempDir('narwhal-store-')
  const trust = [`trusted-public-keys = ${key.publicKey}`]
  await nix.nixOk(['copy', '--from', server.url, '--to', store, closure.top], { config: trust })
  await nix.nixOk(['store', 'verify', '--recursive', '--store', store, closure.top], { config: trust })
  assert.equal(readFileSync(path.join(store, closure.top, 'dep-ref'), 'utf8').trim(), closure.dep)
  assert.deepEqual(readFileSync(path.join(store, closure.data, 'random.bin')), readFileSync(path.join(closure.data, 'random.bin')))
})

for (const [what, differ] of [
  ['the recorded NarHash differs', (narHash: Buffer, narSize: number) => ({ narHash: Buffer.from(narHash.map((b, i) => i === 0 ? b ^ 1 : b)), narSize })],
  ['the NAR is shorter than the recorded NarSize', (narHash: Buffer, narSize: number) => ({ narHash, narSize: narSize + 8 })],
  ['the NAR is longer than the recorded NarSize', (narHash: Buffer, narSize: number) => ({ narHash, narSize: narSize - 8 })]
] as const) {
  test(`uncompressed, a large path is corrupt when ${what}; its NAR is never stored`, async (t) => {
    const key = await nixKeyPair('pusher-test-1')
    const server = await startServer(t, { trustedKeys: [key.publicKey] })
    const client = new CacheClient(server.url, (await server.token('push')))
    t.after(() => client.close())
    const closure = await buildClosure({ dataBytes: 2 * 1024 * 1024 })
    const infos = (await closureInfo([closure.top])).map(i => i.path === closure.data ? { ...i, ...differ(i.narHash, i.narSize) } : i)
    const result = await pushClosure(infos, options(client, key.secretFile, { compression: 'none' }))
    const kinds = new Map(result.failed.map(f => [f.path, f.kind]))
    assert.equal(kinds.get(closure.data), 'corrupt')
    assert.equal(kinds.get(closure.dep), 'refused', 'its reference failed: the server would refuse it')
    assert.equal(kinds.get(closure.top), 'refused')
    assert.equal((await server.cache.metadata.narinfos.count()), 0)
    const data = infos.find(i => i.path === closure.data)
    const named = await fetch(`${server.url}/nar/${encodeNix32(data?.narHash ?? Buffer.alloc(32))}.nar`)
    await named.body?.cancel()
    assert.equal(named.status, 404, 'nothing stored under the recorded name')
  })
}

test('refused paths fail with the server\'s reason, and nothing is stored', async (t) => {
  const trusted = await nixKeyPair('trusted-1')
  const other = await nixKeyPair('other-1')
  const server = await startServer(t, { trustedKeys: [trusted.publicKey] })
  const client = new CacheClient(server.url, (await server.token('push')))
  t.after(() => client.close())
  const closure = await buildClosure()
  const result = await pushClosure(await closureInfo([closure.top]), options(client, other.secretFile))
  assert.equal(result.uploaded.length, 0)
  const data = result.failed.find(f => f.path === closure.data)
  assert.match(data?.reason ?? '', /403.*NARWHAL_SIGNATURE_REJECTED/)
  assert.equal(result.failed.length, 3)
  for (const f of result.failed) {
    assert.equal(f.kind, 'refused')
    assert.match(f.reason, /NARWHAL_SIGNATURE_REJECTED: narinfo field Sig: no signature by a trusted uploader key/)
  }
  assert.equal((await server.cache.metadata.narinfos.count()), 0)
})

test('a path Nix collected after the closure was read is gone, not refused; the rest goes up', async (t) => {
  const key = await nixKeyPair('pusher-test-1')
  const server = await startServer(t, { trustedKeys: [key.publicKey] })
  const client = new CacheClient(server.url, (await server.token('push')))
  t.after(() => client.close())
  const closure = await buildClosure()
  const infos = await closureInfo([closure.top])
  await runOk('nix-store', ['--delete', closure.top], { env: nixEnv() })
  const result = await pushClosure(infos, options(client, key.secretFile))
  assert.deepEqual(result.failed.map(f => [f.path, f.kind]), [[closure.top, 'gone']])
  assert.deepEqual([...result.uploaded].sort(), [closure.data, closure.dep].sort())
  assert.equal((await server.cache.metadata.narinfos.count()), 2)
})

test('uncompressed, a large path Nix collected after the closure was read is gone, not refused or corrupt', async (t) => {
  const key = await nixKeyPair('pusher-test-1')
  const server = await startServer(t, { trustedKeys: [key.publicKey] })
  const client = new CacheClient(server.url, (await server.token('push')))
  t.after(() => client.close())
  // A path of its own (nothing references it), above batchNarBytes: PUT as it is read.
  const large = await addStorePath({ randomBytes: 2 * 1024 * 1024, name: 'narwhal-gone' })
  const infos = await closureInfo([large])
  await runOk('nix-store', ['--delete', large], { env: nixEnv() })
  const result = await pushClosure(infos, options(client, key.secretFile, { compression: 'none' }))
  assert.deepEqual(result.failed.map(f => [f.path, f.kind]), [[large, 'gone']])
  assert.equal((await server.cache.metadata.narinfos.count()), 0)
})

test('a path whose NAR does not match the store\'s record is corrupt, and what references it is not sent', async (t) => {
  const key = await nixKeyPair('pusher-test-1')
  const server = await startServer(t, { trustedKeys: [key.publicKey] })
  const client = new CacheClient(server.url, (await server.token('push')))
  t.after(() => client.close())
  const closure = await buildClosure()
  const infos = (await closureInfo([closure.top])).map(i => i.path === closure.data ? { ...i, narSize: i.narSize + 8 } : i)
  const result = await pushClosure(infos, options(client, key.secretFile))
  const kinds = new Map(result.failed.map(f => [f.path, f.kind]))
  assert.equal(kinds.get(closure.data), 'corrupt')
  assert.equal(kinds.get(closure.dep), 'refused', 'its reference failed: the server would refuse it')
  assert.equal(kinds.get(closure.top), 'refused')
  assert.equal((await server.cache.metadata.narinfos.count()), 0)
})

test('an unreachable server is a transient failure', async () => {
  const key = await nixKeyPair('pusher-test-1')
  const client = new CacheClient('http://127.0.0.1:9', 'nw_x')
  const closure = await buildClosure()
  await assert.rejects(pushClosure(await closureInfo([closure.top]), options(client, key.secretFile)), TransientError)
  await client.close()
})

test('503 with Retry-After is retried no sooner than asked', async (t) => {
  const key = await nixKeyPair('pusher-test-1')
  const times: number[] = []
  const fake = createServer((req, res) => {
    times.push(Date.now())
    req.resume()
    res.writeHead(503, { 'retry-after': '1', 'content-type': 'text/plain' }).end('busy\n')
  })
  await new Promise<void>(resolve => fake.listen(0, '127.0.0.1', resolve))
  t.after(() => fake.close())
  const address = fake.address()
  if (address === null || typeof address === 'string') throw new Error('no address')
  const client = new CacheClient(`http://127.0.0.1:${address.port}`, undefined)
  const closure = await buildClosure()
  await assert.rejects(pushClosure(await closureInfo([closure.top]), options(client, key.secretFile)),
    (err: Error) => err instanceof TransientError && err.retryAfterMs === 1000 && /HTTP 503: busy/.test(err.message))
  assert.equal(times.length, 2)
  assert.ok(times[1]! - times[0]! >= 190, 'waited (Retry-After capped by the per-request maximum of 200 ms here)')
  await client.close()
})

test('secret key files readable by others, or owned by someone else, are refused; keys never print', async () => {
  const key = await nixKeyPair('pusher-test-1')
  const loose = path.join(tempDir(), 'loose.sk')
  copyFileSync(key.secretFile, loose)
  chmodSync(loose, 0o640)
  assert.throws(() => loadSecretKeys([loose]), /loose\.sk: mode 0640 lets other users read it; chmod 600/)
  const foreign = path.join(tempDir(), 'foreign.sk')
  copyFileSync(key.secretFile, foreign)
  chmodSync(foreign, 0o600)
  chownSync(foreign, 65534, 65534)
  assert.throws(() => loadSecretKeys([foreign]), /owned by uid 65534, not by the user running the pusher/)
  const [loaded] = loadSecretKeys([key.secretFile])
  const secretText = readFileSync(key.secretFile, 'utf8').split(':')[1]!
  for (const shown of [String(loaded), JSON.stringify(loaded), inspect(loaded)]) {
    assert.ok(!shown.includes(secretText.slice(0, 20)), 'no key material in logs')
  }
})

test('topological order puts references first', async () => {
  const closure = await buildClosure()
  const ordered = topologicalOrder(await closureInfo([closure.top])).map(i => i.path)
  assert.deepEqual(ordered, [closure.data, closure.dep, closure.top])
})

test('the in-process NAR serialiser writes exactly what nix-store --dump writes', async () => {
  const closure = await buildClosure()
  const tmp = tempDir()
  for (const info of await closureInfo([closure.top])) {
    const ours = await dumpCompressed(info.path, tmp, 'zstd', undefined, 'in-process')
    const nix = await dumpCompressed(info.path, tmp, 'zstd', undefined, 'nix-store')
    assert.ok(ours.narHash.equals(info.narHash), `${info.path}: NarHash matches the store's record`)
    assert.equal(ours.narSize, info.narSize)
    assert.equal(ours.fileHash, nix.fileHash, 'same NAR, same compressed bytes')
    for (const source of ['in-process', 'nix-store'] as const) {
      const plain = await dumpCompressed(info.path, tmp, 'none', undefined, source)
      assert.equal(plain.fileHash, encodeNix32(info.narHash), `${source}, uncompressed: the file hash is the NarHash`)
      assert.deepEqual([plain.fileSize, plain.narSize, plain.url], [info.narSize, info.narSize, `nar/${plain.fileHash}.nar`])
    }
  }
})

test('paths signed by an upstream key (skipSignedBy) are not uploaded', async (t) => {
  const key = await nixKeyPair('pusher-test-1')
  const upstream = await nixKeyPair('upstream-1')
  const server = await startServer(t, { trustedKeys: [key.publicKey] })
  const client = new CacheClient(server.url, (await server.token('push')))
  t.after(() => client.close())
  const closure = await buildClosure()
  await nixOk(['store', 'sign', '--key-file', upstream.secretFile, closure.data])
  const infos = await closureInfo([closure.data])
  assert.ok(infos[0]?.sigs.some(s => s.startsWith('upstream-1:')))
  const result = await pushClosure(infos, options(client, key.secretFile, { skipSignedBy: ['upstream-1'] }))
  assert.equal(result.skippedUpstream, 1)
  assert.equal(result.uploaded.length, 0)
  assert.equal((await server.cache.metadata.narinfos.count()), 0)
})
