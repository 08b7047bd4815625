/**
 * PostgreSQL restarted under a running `narwhal serve` (PostgreSQL + S3), with the real Nix
 * client: the server reconnects by itself, no restart of narwhal. A restart between pushes and
 * one in the middle of a `nix copy` are both invisible to Nix: narinfos, tokens, pushes and
 * substitutions go on.
 *
 * On a PostgreSQL cluster of this test's own (about 2 s to start): restarting the shared one
 * would cut every other PostgreSQL test's connections. The bucket is on the shared Ceph, which
 * nothing here stops.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import path from 'node:path'
import { buildClosure, netrcFile, nixKeyPair, nixOk, run, tempDir, type TestClosure } from '../helpers/nix.js'
import { ownPostgres } from '../helpers/own-engines.js'
import { createDatabase, restartPostgres } from '../helpers/postgres.js'
import { awsEnv, createBucket, s3Engine, storageUrl, unfinishedUploads } from '../helpers/s3.js'
import { CLI, spawnServer } from '../helpers/server-process.js'
import { get } from '../helpers/upload.js'

function hashPart (storePath: string): string {
  return path.basename(storePath).slice(0, 32)
}

test('PostgreSQL restarted under serve, between pushes and in the middle of one: nix copy pushes and substitutes on, narwhal not restarted', { timeout: 5 * 60_000 }, async (t) => {
  const engine = await ownPostgres()
  t.after(engine.stop)
  const db = await createDatabase(engine)
  const s3 = s3Engine()
  const bucket = await createBucket(s3)
  const aws = Object.fromEntries(Object.entries(awsEnv(s3)).filter(([k]) => k.startsWith('AWS_'))) as Record<string, string>
  const env = { ...aws, NARWHAL_DATABASE_URL: db.url, NARWHAL_STORAGE_URL: storageUrl(s3, bucket) }
  const key = await nixKeyPair('pg-restart-test-1')
  const server = await spawnServer({ dataDir: tempDir('narwhal-data-'), logFile: path.join(tempDir('narwhal-log-'), 'serve.log'), trustedKeys: [key.publicKey], env })
  t.after(async () => { await server.stop() })
  const created = await run('node', [CLI, 'token', 'create', '--scope', 'push', '--data', tempDir('narwhal-cli-')], { env: { ...process.env, ...env } })
  assert.equal(created.code, 0, created.stderr)
  const netrc = [`netrc-file = ${netrcFile(created.stdout.trim())}`]
  const push = async (closure: TestClosure, options = ''): Promise<void> => {
    await nixOk(['copy', '--to', `${server.url}?secret-key=${key.secretFile}${options}`, closure.top], { config: netrc })
  }
  const substitute = async (closure: TestClosure): Promise<void> => {
    const store = tempDir('narwhal-store-')
    const trust = [`trusted-public-keys = ${key.publicKey}`]
    await nixOk(['copy', '--from', server.url, '--to', store, closure.top], { config: trust })
    await nixOk(['store', 'verify', '--recursive', '--store', store, closure.top], { config: trust })
  }

  const first = await buildClosure({ dataBytes: 64 * 1024 })
  await push(first)
  const before = await get(`${server.url}/${hashPart(first.top)}.narinfo`)
  assert.equal(before.status, 200)

  // Between pushes: every connection the server holds is closed under it.
  await restartPostgres(engine)
  const after = await get(`${server.url}/${hashPart(first.top)}.narinfo`)
  assert.equal(after.status, 200, `a narinfo right after the restart: ${after.body}`)
  assert.equal(after.body, before.body)
  const second = await buildClosure({ dataBytes: 64 * 1024 })
  await push(second)

  // In the middle of a push: restarted while a 40 MiB NAR streams into the bucket as a multipart
  // upload, before its row and the closure's narinfos are written.
  const third = await buildClosure({ dataBytes: 40 * 1024 * 1024 })
  const pushing = push(third, '&compression=none')
  const startedAt = Date.now()
  while ((await unfinishedUploads(s3, bucket)).length === 0) {
    assert.ok(Date.now() - startedAt < 60_000, 'the large NAR went up as a multipart upload')
    await new Promise(resolve => setTimeout(resolve, 50))
  }
  await restartPostgres(engine)
  await pushing

  for (const closure of [first, second, third]) await substitute(closure)
  assert.doesNotMatch(server.log(), /"level":50/, 'no internal error in the server\'s log')
})
