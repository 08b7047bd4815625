/**
 * Budgets against the real clients. What Nix 2.8 does with a 429 (src/libstore/filetransfer.cc,
 * checked against the installed binary): every 4xx but 408 and 429 is final; a 429 is retried up
 * to `download-attempts` (5) times, 250 ms · 2^n apart plus jitter (about 4.6 s in all), without
 * reading Retry-After. A retried download works, so a substitution gets through a read budget
 * whose one-second windows its retries reach. A retried upload is re-sent from where the first
 * attempt stopped reading its buffer (fixed upstream in 2026, NixOS/nix#15047): it works only
 * because the 429 is answered instead of `100 Continue`, before the body was read. Nix 2.26 does
 * the same, but its curl sends small bodies without waiting for `100 Continue`, so its retried
 * small uploads go out empty and fail (docs/nix-clients.md). narwhal's pusher re-sends the body
 * and honours Retry-After in any case. Each Nix test runs with both clients.
 *
 * The server's metrics prove that 429s were really answered along the way.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync, readFileSync } from 'node:fs'
import path from 'node:path'
import { closureInfo } from '../../src/pusher/closure.js'
import { pushClosure } from '../../src/pusher/push-closure.js'
import { loadSecretKeys } from '../../src/pusher/signer.js'
import { CacheClient } from '../../src/pusher/uploader.js'
import { buildClosure, netrcFile, nixKeyPair, nixOk, tempDir, testEachClient, type NixClient } from '../helpers/nix.js'
import { startServer, type TestServer } from '../helpers/server.js'

async function rateLimited (server: TestServer): Promise<number> {
  const text = await (await fetch(`${server.url}/metrics`)).text()
  return Number(/narwhal_refusals_total\{code="NARWHAL_RATE_LIMITED"\} (\d+)/.exec(text)?.[1] ?? 0)
}

/** A server holding a pushed closure, and a second one on the same data with the given budgets. */
async function cacheWithBudgets (t: test.TestContext, client: NixClient, env: Record<string, string>) {
  const key = await nixKeyPair('test-uploader-1')
  const open = await startServer(t, { trustedKeys: [key.publicKey] })
  const closure = await buildClosure({ client })
  await client.nixOk(['copy', '--to', `${open.url}?secret-key=${key.secretFile}`, closure.top], { config: [`netrc-file = ${netrcFile((await open.token('push')))}`] })
  const limited = await startServer(t, { trustedKeys: [key.publicKey], dataDir: open.config.dataDir, env })
  return { key, closure, server: limited }
}

testEachClient('nix copy --from and nix-store -r substitute through a read budget of 2 per second: Nix retries the 429s', async (t, client) => {
  const { key, closure, server } = await cacheWithBudgets(t, client, { NARWHAL_RATE_LIMIT_READS: '2', NARWHAL_RATE_LIMIT_WINDOW_SECONDS: '1' })

  const store = tempDir('narwhal-store-')
  const copied = await client.nix(['copy', '--from', server.url, '--to', store, closure.top], { config: [`trusted-public-keys = ${key.publicKey}`] })
  assert.equal(copied.code, 0, copied.stderr)
  assert.match(copied.stderr, /HTTP error 429/, 'Nix saw 429s and retried them')
  assert.equal(readFileSync(path.join(store, closure.top, 'dep-ref'), 'utf8').trim(), closure.dep)
  const afterCopy = await rateLimited(server)
  assert.ok(afterCopy > 0, 'nix copy --from was throttled')

  const storeB = tempDir('narwhal-store-b-')
  const realised = await client.run('nix-store', ['--store', storeB, '--realise', closure.top,
    '--option', 'substituters', server.url, '--option', 'trusted-public-keys', key.publicKey])
  assert.equal(realised.code, 0, realised.stderr)
  assert.ok(existsSync(path.join(storeB, closure.data, 'random.bin')))
  assert.ok(await rateLimited(server) > afterCopy, 'nix-store -r was throttled')
})

testEachClient('a read budget Nix cannot fit into its retries fails the substitution after five attempts', async (t, client) => {
  // One read per minute: after the first request every retry lands in the same window.
  const { key, closure, server } = await cacheWithBudgets(t, client, { NARWHAL_RATE_LIMIT_READS: '1', NARWHAL_RATE_LIMIT_WINDOW_SECONDS: '60' })
  const result = await client.nix(['copy', '--from', server.url, '--to', tempDir('narwhal-store-'), closure.top],
    { config: [`trusted-public-keys = ${key.publicKey}`] })
  assert.notEqual(result.code, 0)
  assert.match(result.stderr, /error: unable to download '[^']+': HTTP error 429/)
  const retries = result.stderr.match(/retrying in \d+ ms/g) ?? []
  assert.ok(retries.length >= 4, `Nix retried before giving up (${retries.length} retries)`)
})

testEachClient('nix copy --to against a write budget: 2.8 gets through (the 429 comes instead of 100 Continue); 2.26 re-sends small bodies empty and fails', async (t, client) => {
  const key = await nixKeyPair('test-uploader-1')
  const server = await startServer(t, {
    trustedKeys: [key.publicKey],
    env: { NARWHAL_RATE_LIMIT_WRITES: '1', NARWHAL_RATE_LIMIT_WINDOW_SECONDS: '1' }
  })
  const closure = await buildClosure({ client })
  const result = await client.nix(['copy', '--to', `${server.url}?secret-key=${key.secretFile}`, closure.top],
    { config: [`netrc-file = ${netrcFile((await server.token('push')))}`] })
  assert.ok(await rateLimited(server) > 0, 'a PUT was refused with 429')
  assert.match(result.stderr, /unable to upload '[^']+': HTTP error 429/)
  if (client.version === '2.8') {
    // Nix re-sends a retried upload from where its first attempt stopped reading. Nix 2.8's curl
    // sends `Expect: 100-continue` on every PUT and waits; narwhal answers a refusal instead of
    // `100 Continue` (server/body.ts), so no byte of the body was read and the retry sends all
    // of it. Were the server to invite the body first, the retry would go out empty.
    assert.equal(result.code, 0, result.stderr)
    assert.equal((await server.cache.metadata.narinfos.count()), closure.all.length)
  } else {
    // Trixie's curl sends Expect only on bodies over 1 MiB (nix-clients.test.ts): a narinfo or a
    // small NAR goes out whole with its headers, the 429 comes after, and every retry sends
    // nothing; Nix 2.26 gives up. Nothing half-made is stored.
    assert.notEqual(result.code, 0)
    assert.match(result.stderr, /only 0\/\d+ of needed bytes read/)
    assert.ok((await server.cache.metadata.narinfos.count()) < closure.all.length)
  }
})

test('narwhal push gets through a write budget of 2 per second: it re-sends the body and honours Retry-After', async (t) => {
  const key = await nixKeyPair('pusher-test-1')
  const server = await startServer(t, {
    trustedKeys: [key.publicKey],
    env: { NARWHAL_RATE_LIMIT_WRITES: '2', NARWHAL_RATE_LIMIT_WINDOW_SECONDS: '1' }
  })
  const client = new CacheClient(server.url, (await server.token('push')))
  t.after(() => client.close())
  const closure = await buildClosure()
  const result = await pushClosure(await closureInfo([closure.top]), {
    client,
    keys: loadSecretKeys([key.secretFile]),
    tmpDir: tempDir('narwhal-push-tmp-'),
    compression: 'zstd',
    concurrency: 3,
    skipSignedBy: [],
    batchNarBytes: 0,
    batchMaxBytes: 8 * 1024 * 1024,
    requestAttempts: 8,
    backoff: { baseMs: 100, maxMs: 2000 }
  })
  assert.deepEqual(result.failed, [])
  assert.equal(result.uploaded.length, closure.all.length)
  assert.ok(await rateLimited(server) > 0, 'the push was throttled')
  const store = tempDir('narwhal-store-')
  await nixOk(['copy', '--from', server.url, '--to', store, closure.top], { config: [`trusted-public-keys = ${key.publicKey}`] })
  assert.equal(readFileSync(path.join(store, closure.top, 'dep-ref'), 'utf8').trim(), closure.dep)
})
