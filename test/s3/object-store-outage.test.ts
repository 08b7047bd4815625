/**
 * The object store stopped and started again, for real: Ceph's radosgw process is stopped
 * (`ceph.sh stop-rgw`; connections refused, open ones cut, the cluster under it stays up) and
 * started again, under a running `narwhal serve`. NAR reads and uploads answer 503
 * NARWHAL_STORAGE_UNAVAILABLE with Retry-After, narinfos are still served from the database,
 * nothing half-written becomes visible, and once radosgw is back the same server process takes
 * pushes and serves substitutions by itself. A narinfo accepted while the store was down (its row
 * written, its bucket object not) is what `fsck` then finds and `fsck --repair` publishes.
 *
 * On a Ceph cluster of this file's own: stopping the shared one's radosgw would fail every other
 * S3 test running meanwhile. It costs about 8 s to start and 6 s to stop, on one of the suite's
 * two concurrent slots while the other goes on; running this file last on the run's own cluster
 * instead (test/run.sh) would save those 14 s but add the file's whole run (about 35 s) to the
 * end of the suite with the other slot idle, and the file could no longer run on its own.
 */
import { after, before, test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import path from 'node:path'
import { CreateMultipartUploadCommand, GetObjectCommand } from '@aws-sdk/client-s3'
import { startStorageUpkeep } from '../../src/cli/storage-upkeep.js'
import { generateKeyPair } from '../../src/signing/keys.js'
import { S3BlobStore } from '../../src/storage/s3-blob-store.js'
import { buildClosure, netrcFile, nixKeyPair, nixOk, run, tempDir, type TestClosure } from '../helpers/nix.js'
import { ownCeph, type OwnCeph } from '../helpers/own-engines.js'
import { createDatabase, postgresEngine } from '../helpers/postgres.js'
import { awsEnv, createBucket, listBucket, makePublicRead, s3Client, storageUrl, unfinishedUploads } from '../helpers/s3.js'
import { CLI, createToken, spawnServer } from '../helpers/server-process.js'
import { freshNar, get, makeNarinfo, put } from '../helpers/upload.js'

let ceph: OwnCeph
before(async () => { ceph = await ownCeph() })
after(async () => { await ceph?.stop() })

/** Stops radosgw; started again after the test whatever happens, so the next test finds it up. */
async function stopObjectStore (t: TestContext): Promise<() => Promise<void>> {
  let down = true
  t.after(async () => { if (down) await ceph.startRgw() })
  await ceph.stopRgw()
  return async () => {
    await ceph.startRgw()
    down = false
  }
}

function awsOnly (): Record<string, string> {
  return Object.fromEntries(Object.entries(awsEnv(ceph)).filter(([k]) => k.startsWith('AWS_'))) as Record<string, string>
}

function hashPart (storePath: string): string {
  return path.basename(storePath).slice(0, 32)
}

async function substitute (from: string, publicKey: string, closure: TestClosure): Promise<void> {
  const store = tempDir('narwhal-store-')
  const trust = [`trusted-public-keys = ${publicKey}`]
  await nixOk(['copy', '--from', from, '--to', store, closure.top], { config: trust })
  await nixOk(['store', 'verify', '--recursive', '--store', store, closure.top], { config: trust })
}

test('radosgw stopped under serve on PostgreSQL + S3: narinfos still served, NARs and uploads 503 with Retry-After, nothing half-written visible; back without restarting narwhal', { timeout: 5 * 60_000 }, async (t) => {
  const db = await createDatabase(postgresEngine())
  t.after(db.drop)
  const bucket = await createBucket(ceph)
  const env = { ...awsOnly(), NARWHAL_DATABASE_URL: db.url, NARWHAL_STORAGE_URL: storageUrl(ceph, bucket) }
  const key = await nixKeyPair('outage-test-1')
  const uploader = generateKeyPair('outage-test-2')
  const dataDir = tempDir('narwhal-data-')
  const server = await spawnServer({ dataDir, logFile: path.join(tempDir('narwhal-log-'), 'serve.log'), trustedKeys: [key.publicKey, uploader.publicKeyText], env })
  t.after(async () => { await server.stop() })
  const cli = async (args: string[]): Promise<{ code: number | null, out: string }> => {
    const result = await run('node', [CLI, ...args, '--data', tempDir('narwhal-cli-')], { env: { ...process.env, ...env } })
    return { code: result.code, out: result.stdout + result.stderr }
  }
  const token = (await cli(['token', 'create', '--scope', 'push'])).out.trim()
  const netrc = [`netrc-file = ${netrcFile(token)}`]
  const pushTo = `${server.url}?secret-key=${key.secretFile}&compression=none`

  const small = await buildClosure({ dataBytes: 64 * 1024 })
  await nixOk(['copy', '--to', pushTo, small.top], { config: netrc })
  const narinfoBefore = await get(`${server.url}/${hashPart(small.data)}.narinfo`)
  assert.equal(narinfoBefore.status, 200)
  const narUrl = /^URL: (.*)$/m.exec(narinfoBefore.body)?.[1] ?? ''
  // A NAR uploaded now, whose narinfo comes while the object store is down.
  const early = await freshNar('xz')
  assert.equal((await put(`${server.url}/${early.url}`, early.bytes, token)).status, 201)

  // A 40 MiB NAR goes up as a multipart upload (8 MiB parts); radosgw is stopped in its middle.
  const large = await buildClosure({ dataBytes: 40 * 1024 * 1024 })
  // One attempt: Nix 2.8 retries a failed upload with a truncated body (README, Known limits), each
  // retry waiting out the idle timeout (60 s; four retries, 4 minutes). The server's answers are tested below.
  const interrupted = nixOk(['copy', '--to', pushTo, large.top], { config: [...netrc, 'download-attempts = 1'] })
    .then(() => 'finished', () => 'failed')
  const startedAt = Date.now()
  while ((await unfinishedUploads(ceph, bucket)).length === 0) {
    assert.ok(Date.now() - startedAt < 60_000, 'the large NAR went up as a multipart upload')
    await new Promise(resolve => setTimeout(resolve, 50))
  }
  const restart = await stopObjectStore(t)
  assert.equal(await interrupted, 'failed', 'a push while the object store is down fails')

  const narinfo = await get(`${server.url}/${hashPart(small.data)}.narinfo`)
  assert.equal(narinfo.status, 200, 'narinfos come from the database')
  assert.equal(narinfo.body, narinfoBefore.body)
  const read = await get(`${server.url}/${narUrl}`)
  assert.equal(read.status, 503, read.body)
  assert.ok(Number(read.headers['retry-after']) > 0, 'a 503 for a NAR says when to retry')
  assert.match(read.body, /^NARWHAL_STORAGE_UNAVAILABLE/)
  assert.doesNotMatch(read.body, new RegExp(new URL(ceph.endpoint).port), 'the store\'s address stays in the log')
  const fresh = await freshNar('xz')
  const write = await put(`${server.url}/${fresh.url}`, fresh.bytes, token)
  assert.equal(write.status, 503, write.body)
  assert.ok(Number(write.headers['retry-after']) > 0, 'a 503 for an upload says when to retry')
  assert.match(write.body, /^NARWHAL_STORAGE_UNAVAILABLE/)
  for (const storePath of large.all) {
    assert.equal((await get(`${server.url}/${hashPart(storePath)}.narinfo`)).status, 404, `nothing of the interrupted push is served: ${storePath}`)
  }
  // Its NAR is whole in the bucket, so the row is written; the bucket's narinfo object cannot be:
  // 503, and fsck finds it missing once the store is back.
  const earlyNarinfo = await put(`${server.url}/${early.hashPart}.narinfo`, makeNarinfo(early, { keys: [uploader.secretKey] }), token,
    { 'content-type': 'text/x-nix-narinfo' })
  assert.equal(earlyNarinfo.status, 503, earlyNarinfo.body)

  await restart()
  // The bucket read as a Nix cache holds only whole paths: no narinfo of the interrupted push,
  // and every narinfo's NAR there in full.
  const objects = await listBucket(ceph, bucket)
  for (const storePath of small.all) assert.ok(objects.has(`${hashPart(storePath)}.narinfo`), storePath)
  for (const storePath of large.all) assert.equal(objects.has(`${hashPart(storePath)}.narinfo`), false, storePath)
  const client = s3Client(ceph)
  try {
    for (const [name] of objects) {
      if (!name.endsWith('.narinfo')) continue
      const body = await (await client.send(new GetObjectCommand({ Bucket: bucket, Key: name }))).Body?.transformToString() ?? ''
      const url = /^URL: (.*)$/m.exec(body)?.[1] ?? ''
      assert.equal(objects.get(url)?.size, Number(/^FileSize: (\d+)$/m.exec(body)?.[1]), `${name} names a whole NAR`)
    }
  } finally { client.destroy() }

  // The same server process, without a restart: a real push of the interrupted closure, then
  // substitution of both closures through it and straight from the bucket.
  await nixOk(['copy', '--to', pushTo, large.top], { config: netrc })
  assert.equal((await put(`${server.url}/${fresh.url}`, fresh.bytes, token)).status, 201)
  for (const closure of [small, large]) await substitute(server.url, key.publicKey, closure)
  await makePublicRead(ceph, bucket)
  for (const closure of [small, large]) await substitute(`${ceph.endpoint}/${bucket}`, key.publicKey, closure)
  const fsck = await cli(['fsck'])
  assert.equal(fsck.code, 1, fsck.out)
  assert.match(fsck.out, new RegExp(`^narinfo-object-missing ${early.storePath}: `, 'm'))
  assert.equal(fsck.out.split('\n').filter(line => /^[a-z-]+ \S+: /.test(line)).length, 1, fsck.out)
  const repaired = await cli(['fsck', '--repair'])
  assert.equal(repaired.code, 1, repaired.out)
  assert.equal((await get(`${ceph.endpoint}/${bucket}/${early.hashPart}.narinfo`)).body, (await get(`${server.url}/${early.hashPart}.narinfo`)).body)
  const clean = await cli(['fsck'])
  assert.equal(clean.code, 0, clean.out)
})

for (const workers of ['1', '2']) {
  test(`serve --workers ${workers} started while radosgw is stopped answers narinfos and 503 for NARs and uploads, and serves NARs once it is back`, { timeout: 3 * 60_000 }, async (t) => {
    const key = await nixKeyPair('test-uploader-1')
    const bucket = await createBucket(ceph)
    const dataDir = tempDir('narwhal-data-')
    const spawn = async (): Promise<Awaited<ReturnType<typeof spawnServer>>> =>
      await spawnServer({ dataDir, logFile: path.join(dataDir, 'serve.log'), trustedKeys: [key.publicKey], args: ['--storage', storageUrl(ceph, bucket), '--workers', workers], env: awsOnly() })

    // A cache with one path in it, pushed while the bucket was reachable.
    const first = await spawn()
    const closure = await buildClosure({ dataBytes: 64 * 1024 })
    const token = await createToken(dataDir, 'push')
    await nixOk(['copy', '--to', `${first.url}?secret-key=${key.secretFile}`, closure.top], { config: [`netrc-file = ${netrcFile(token)}`] })
    await first.stop()

    const restart = await stopObjectStore(t)
    const logBefore = first.log().length
    const server = await spawn()
    t.after(async () => await server.stop())
    assert.match(server.log().slice(logBefore), /NARWHAL_STORAGE_UNAVAILABLE/)
    const narinfo = await get(`${server.url}/${hashPart(closure.top)}.narinfo`)
    assert.equal(narinfo.status, 200, narinfo.body)
    const narUrl = /^URL: (.*)$/m.exec(narinfo.body)?.[1]
    assert.ok(narUrl !== undefined, narinfo.body)
    const unavailable = await get(`${server.url}/${narUrl}`)
    assert.equal(unavailable.status, 503)
    assert.ok(unavailable.headers['retry-after'] !== undefined, 'a 503 for a NAR says when to retry')
    const fresh = await freshNar('xz')
    const upload = await put(`${server.url}/${fresh.url}`, fresh.bytes, token)
    assert.equal(upload.status, 503, upload.body)
    assert.ok(upload.headers['retry-after'] !== undefined, 'a 503 for an upload says when to retry')

    // radosgw is back: NARs are served without a restart.
    await restart()
    const nar = await get(`${server.url}/${narUrl}`)
    assert.equal(nar.status, 200)
    assert.equal(nar.bytes.length, Number(/^FileSize: (\d+)$/m.exec(narinfo.body)?.[1]))
    await substitute(server.url, key.publicKey, closure)
  })
}

test('storage upkeep: radosgw stopped at start is logged with its kind and retried; the sweep and nix-cache-info happen once it is back', { timeout: 60_000 }, async (t) => {
  const bucket = await createBucket(ceph)
  const client = s3Client(ceph)
  try {
    await client.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: 'nar/left-by-a-killed-upload.nar' }))
  } finally { client.destroy() }
  assert.equal((await unfinishedUploads(ceph, bucket)).length, 1)
  Object.assign(process.env, awsOnly())
  // No grace: the upload above counts as left by a killed uploader.
  const store = S3BlobStore.fromUrl(storageUrl(ceph, bucket), { redirectNars: false, sweepGraceMs: 0 })
  t.after(() => store.close())

  const restart = await stopObjectStore(t)
  // The upkeep's retry timer holds no process open (a server has its listener for that): this does.
  const keepAlive = setInterval(() => {}, 1000)
  t.after(() => { clearInterval(keepAlive) })
  const warnings: Array<Record<string, unknown>> = []
  const log = { warn: (fields: Record<string, unknown>) => { warnings.push(fields) }, info: () => {} }
  const upkeep = await startStorageUpkeep(store, 'StoreDir: /nix/store\n', log as never, 200)
  t.after(() => upkeep.stop())
  assert.equal(warnings[0]?.code, 'NARWHAL_STORAGE_UNAVAILABLE')
  let done = false
  const finished = upkeep.done.then(() => { done = true })
  await new Promise(resolve => setTimeout(resolve, 600))
  assert.equal(done, false)
  assert.ok(warnings.length >= 2, 'retried while radosgw stays stopped')

  await restart()
  await finished
  assert.equal(done, true)
  assert.deepEqual(await unfinishedUploads(ceph, bucket), [])
  assert.equal((await listBucket(ceph, bucket)).has('nix-cache-info'), true)
})
