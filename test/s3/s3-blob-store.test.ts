/**
 * storage/s3-blob-store.ts and s3-pending-blob.ts against the real engine (Ceph's RADOS Gateway):
 * a NAR becomes visible only at commit (one PUT when small, a multipart upload when large),
 * whatever is refused or killed leaves no object, ranges and presigned URLs read the bytes back,
 * and every failure of the service is the one error kind.
 */
import { test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import path from 'node:path'
import { Writable } from 'node:stream'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { isNarwhalError } from '../../src/errors.js'
import { encodeNix32 } from '../../src/nix/nix32.js'
import type { NarName } from '../../src/storage/blob-store.js'
import { S3BlobStore, type S3BlobStoreOptions } from '../../src/storage/s3-blob-store.js'
import { S3Objects } from '../../src/storage/s3-objects.js'
import { PART_BYTES } from '../../src/storage/s3-pending-blob.js'
import { freePort } from '../helpers/server-process.js'
import { awsEnv, createBucket, listBucket, s3Engine, storageUrl, unfinishedUploads } from '../helpers/s3.js'
import { nar } from '../unit/nix-test-helpers.js'

const engine = s3Engine()
// The SDK's standard chain finds the engine's keys in the environment, as a server's would.
Object.assign(process.env, { AWS_ACCESS_KEY_ID: engine.accessKey, AWS_SECRET_ACCESS_KEY: engine.secretKey })

async function storeFor (t: TestContext, url: string, options: Partial<S3BlobStoreOptions> = {}): Promise<S3BlobStore> {
  const store = await S3BlobStore.open(url, { redirectNars: false, ...options })
  t.after(() => store.close())
  return store
}

/** An uncompressed NAR of one regular file with `bytes` random bytes, and its file hash. */
function randomNar (bytes: number): { body: Buffer, fileHash: string, name: NarName } {
  const body = nar({ type: 'regular', contents: randomBytes(bytes) })
  const fileHash = encodeNix32(createHash('sha256').update(body).digest())
  return { body, fileHash, name: { fileHash, compression: 'none' } }
}

/** Feeds `body` in uneven chunks, as a socket gives them, waiting when the blob asks. */
async function feed (blob: { write: (chunk: Uint8Array) => Promise<void> | undefined }, body: Buffer): Promise<void> {
  for (let i = 0; i < body.length; i += 65_521) await blob.write(body.subarray(i, i + 65_521))
}

async function readAll (stream: AsyncIterable<Buffer>): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const chunk of stream) chunks.push(chunk)
  return Buffer.concat(chunks)
}

test('a small NAR is one PUT at commit: nothing under nar/ before, the bytes under nar/<hash>.nar after', async (t) => {
  const bucket = await createBucket(engine)
  const store = await storeFor(t, storageUrl(engine, bucket))
  const { body, fileHash, name } = randomNar(100_000)
  const blob = await store.begin(fileHash)
  await feed(blob, body)
  await blob.finish()
  assert.equal((await listBucket(engine, bucket)).size, 0, 'nothing is visible before commit')
  assert.equal(await store.size(name), undefined)
  await blob.commit(name)
  await blob.commit(name) // again: a no-op
  await blob.discard() // after commit: a no-op
  assert.deepEqual([...(await listBucket(engine, bucket)).keys()], [`nar/${fileHash}.nar`])
  assert.equal(await store.size(name), body.length)
  const read = await store.open(name)
  assert.equal(read?.kind, 'body')
  if (read?.kind !== 'body') return
  assert.deepEqual([read.size, read.length], [body.length, body.length])
  assert.ok((await read.read()).equals(body))
  const listed = []
  for await (const entry of store.list()) listed.push(entry)
  assert.equal(listed.length, 1)
  assert.deepEqual({ ...listed[0], modifiedAt: 0 }, { fileHash, compression: undefined, size: body.length, modifiedAt: 0 })
  assert.ok(Math.abs((listed[0]?.modifiedAt ?? 0) - Date.now()) < 60_000, 'when it was written')
  await store.delete(name)
  await store.delete(name) // already gone: success
  assert.equal(await store.open(name), undefined)
  assert.equal((await listBucket(engine, bucket)).size, 0)
})

test('a large NAR streams as a multipart upload: invisible until commit, whole after, ranges read back right', async (t) => {
  const bucket = await createBucket(engine)
  const store = await storeFor(t, storageUrl(engine, bucket))
  const { body, fileHash, name } = randomNar(2 * PART_BYTES + 777_777)
  const blob = await store.begin(fileHash)
  await feed(blob, body)
  await blob.finish()
  assert.deepEqual(await unfinishedUploads(engine, bucket), [`nar/${fileHash}.nar`], 'the parts went up while the bytes arrived')
  assert.equal((await listBucket(engine, bucket)).size, 0, 'nothing is visible before commit')
  await blob.commit(name)
  assert.deepEqual(await unfinishedUploads(engine, bucket), [])
  const object = (await listBucket(engine, bucket)).get(`nar/${fileHash}.nar`)
  assert.equal(object?.size, body.length)
  assert.match(object?.etag ?? '', /-3"$/, 'three parts')

  const whole = await store.open(name)
  assert.ok(whole?.kind === 'body')
  assert.equal(createHash('sha256').update(await readAll(whole.chunks())).digest('hex'), createHash('sha256').update(body).digest('hex'))
  // A range across the first part boundary, and the tail (how Nix resumes).
  for (const [start, end] of [[PART_BYTES - 10, PART_BYTES + 10], [body.length - 5, body.length - 1], [0, 0]] as const) {
    const read = await store.open(name, { start, end })
    assert.ok(read?.kind === 'body')
    assert.deepEqual([read.size, read.length], [body.length, end - start + 1])
    assert.ok((await read.read()).equals(body.subarray(start, end + 1)), `bytes ${start}-${end}`)
  }
})

test('a large NAR discarded part-way (verification refused it) leaves no object and no multipart upload', async (t) => {
  const bucket = await createBucket(engine)
  const store = await storeFor(t, storageUrl(engine, bucket))
  const { body, fileHash, name } = randomNar(3 * PART_BYTES)
  const blob = await store.begin(fileHash)
  await feed(blob, body.subarray(0, 2 * PART_BYTES + 1000))
  // Parts are sent while the rest arrives: the multipart upload is begun before the body's end.
  const deadline = Date.now() + 10_000
  while ((await unfinishedUploads(engine, bucket)).length === 0 && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 20))
  assert.equal((await unfinishedUploads(engine, bucket)).length, 1)
  await blob.discard()
  await blob.discard() // idempotent
  assert.deepEqual(await unfinishedUploads(engine, bucket), [])
  assert.equal((await listBucket(engine, bucket)).size, 0)
  await assert.rejects(blob.commit(name), /discarded/)
})

test('a large NAR begun without its file hash goes up under tmp/ and is copied into place at commit', async (t) => {
  const bucket = await createBucket(engine)
  const store = await storeFor(t, storageUrl(engine, bucket))
  const { body, name } = randomNar(PART_BYTES + 4321)
  const blob = await store.begin()
  await feed(blob, body)
  await blob.finish()
  assert.match((await unfinishedUploads(engine, bucket))[0] ?? '', /^tmp\//)
  assert.equal((await listBucket(engine, bucket)).size, 0, 'nothing is visible before commit')
  await blob.commit(name)
  assert.deepEqual([...(await listBucket(engine, bucket)).keys()], [`nar/${name.fileHash}.nar`], 'the temp object is gone')
  assert.deepEqual(await unfinishedUploads(engine, bucket), [])
  const read = await store.open(name)
  assert.ok(read?.kind === 'body')
  assert.ok((await readAll(read.chunks())).equals(body))
})

test('send() writes the body to a sink; close() releases one unsent', async (t) => {
  const bucket = await createBucket(engine)
  const store = await storeFor(t, storageUrl(engine, bucket))
  const { body, name } = randomNar(300_000)
  const blob = await store.begin(name.fileHash)
  await feed(blob, body)
  await blob.finish()
  await blob.commit(name)
  const chunks: Buffer[] = []
  const sink = new Writable({ write (chunk: Buffer, _encoding, callback) { chunks.push(chunk); callback() } })
  const read = await store.open(name, { start: 1000, end: 200_999 })
  assert.ok(read?.kind === 'body')
  assert.equal(await read.send(sink), undefined)
  assert.ok(Buffer.concat(chunks).equals(body.subarray(1000, 201_000)))
  assert.ok(sink.writableFinished, 'the sink was ended')
  // Opened many times and closed unsent: no connection is kept (the pool would run dry and hang).
  for (let i = 0; i < 60; i++) {
    const unsent = await store.open(name)
    assert.ok(unsent?.kind === 'body')
    unsent.close()
  }
  const last = await store.open(name)
  assert.ok(last?.kind === 'body')
  assert.equal((await last.read()).length, body.length)
})

test('presigned redirects: the URL fetches the NAR with fetch(), and stops working once it expires', async (t) => {
  const bucket = await createBucket(engine)
  const streamed = await storeFor(t, storageUrl(engine, bucket))
  const { body, fileHash, name } = randomNar(50_000)
  const blob = await streamed.begin(fileHash)
  await feed(blob, body)
  await blob.finish()
  await blob.commit(name)

  const redirecting = await storeFor(t, storageUrl(engine, bucket), { redirectNars: true, presignSeconds: 2 })
  const answer = await redirecting.open(name)
  assert.ok(answer?.kind === 'redirect')
  assert.ok(answer.url.startsWith(`${engine.endpoint}/${bucket}/nar/${fileHash}.nar?`), answer.url)
  const response = await fetch(answer.url)
  assert.equal(response.status, 200)
  assert.ok(Buffer.from(await response.arrayBuffer()).equals(body))
  const ranged = await fetch(answer.url, { headers: { range: 'bytes=100-199' } })
  assert.equal(ranged.status, 206)
  assert.ok(Buffer.from(await ranged.arrayBuffer()).equals(body.subarray(100, 200)))
  // Not a public bucket: without the signature the object is refused.
  assert.equal((await fetch(`${engine.endpoint}/${bucket}/nar/${fileHash}.nar`)).status, 403)
  await new Promise(resolve => setTimeout(resolve, 3000))
  assert.equal((await fetch(answer.url)).status, 403, 'the URL expired')
})

const CHILD = path.join(path.dirname(fileURLToPath(import.meta.url)), '../helpers/s3-upload-child.js')

test('an uploader killed mid-upload leaves an unfinished multipart upload, which the sweep aborts once past its grace', async (t) => {
  const bucket = await createBucket(engine)
  const url = storageUrl(engine, bucket)
  const child = spawn(process.execPath, [CHILD, url], { env: awsEnv(engine), stdio: ['ignore', 'pipe', 'inherit'] })
  const exited = new Promise(resolve => child.on('exit', resolve))
  for await (const line of createInterface({ input: child.stdout })) {
    if (line === 'parts sent') break
  }
  child.kill('SIGKILL')
  await exited
  const left = await unfinishedUploads(engine, bucket)
  assert.equal(left.length, 1)
  assert.match(left[0] ?? '', /^nar\/[0-9a-df-np-sv-z]{52}\.nar$/)
  assert.equal((await listBucket(engine, bucket)).size, 0, 'the killed upload is not visible')

  // Within the grace it may still be a live upload at another replica: left alone.
  const store = await storeFor(t, url)
  await store.sweep()
  assert.equal((await unfinishedUploads(engine, bucket)).length, 1)
  const inFlight = []
  for await (const leftover of store.leftovers(Date.now() - 60_000)) inFlight.push(leftover)
  assert.deepEqual(inFlight.map(l => [l.kind, l.removable]), [['in-flight', false]])
  // Past it, the sweep aborts it, and a second sweep finds nothing more.
  const sweeper = await storeFor(t, url, { sweepGraceMs: 0 })
  await sweeper.sweep(Date.now() + 1000)
  assert.deepEqual(await unfinishedUploads(engine, bucket), [])
  await sweeper.sweep(Date.now() + 1000)
  assert.equal((await listBucket(engine, bucket)).size, 0)
})

test('the bucket as a Nix cache: nix-cache-info and narinfos are written and removed under their standard names', async (t) => {
  const bucket = await createBucket(engine)
  const store = await storeFor(t, storageUrl(engine, bucket, '&prefix=team'))
  await store.publishCacheInfo('StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n')
  const hashPart = 'p4pclmv1gyja5kzc26npqpia1qqxrf0l'
  await store.publishNarinfo(hashPart, 'StorePath: /nix/store/p4pclmv1gyja5kzc26npqpia1qqxrf0l-x\n')
  const objects = await listBucket(engine, bucket)
  assert.deepEqual([...objects.keys()].sort(), ['team/nix-cache-info', `team/${hashPart}.narinfo`])
  assert.equal((await store.objects.get(`${hashPart}.narinfo`))?.toString(), 'StorePath: /nix/store/p4pclmv1gyja5kzc26npqpia1qqxrf0l-x\n')

  // Read back for fsck: only the narinfos at the top (under the prefix), with the MD5 of their text.
  const text = 'StorePath: /nix/store/p4pclmv1gyja5kzc26npqpia1qqxrf0l-x\n'
  await store.objects.put(`nar/${hashPart}.narinfo`, 'not a narinfo of the cache', { contentType: 'text/plain' })
  await store.objects.put('x.narinfo', 'not a hash part', { contentType: 'text/plain' })
  const listed = []
  for await (const entry of store.published.list()) listed.push(entry)
  assert.deepEqual(listed, [{ hashPart, md5: createHash('md5').update(text).digest('hex') }])
  assert.equal(await store.published.read(hashPart), text)
  assert.equal(await store.published.read('00000000000000000000000000000000'), undefined)
  assert.equal(store.published.where(hashPart), `s3://${bucket}/team/${hashPart}.narinfo`)
  await store.objects.delete(`nar/${hashPart}.narinfo`)
  await store.objects.delete('x.narinfo')

  await store.unpublishNarinfo(hashPart)
  await store.unpublishNarinfo(hashPart)
  assert.deepEqual([...(await listBucket(engine, bucket)).keys()], ['team/nix-cache-info'])
})

test('object store down: opening, reading, uploading and sweeping fail as NARWHAL_STORAGE_UNAVAILABLE', async (t) => {
  const bucket = await createBucket(engine)
  const store = await storeFor(t, storageUrl(engine, bucket))
  const { body, fileHash, name } = randomNar(PART_BYTES + 5000)
  // The same bucket named at a port where nothing listens: as a store whose service stopped.
  const port = await freePort()
  const down = new S3BlobStore(new S3Objects({ ...store.objects.location, endpoint: `http://127.0.0.1:${port}` }), { redirectNars: false })
  t.after(() => down.close())
  const unavailable = (err: unknown): boolean => isNarwhalError(err) && err.code === 'NARWHAL_STORAGE_UNAVAILABLE'
  await assert.rejects(S3BlobStore.open(`s3://${bucket}?endpoint=127.0.0.1:${port}&scheme=http`, { redirectNars: false }), unavailable)
  await assert.rejects(down.open(name), unavailable)
  await assert.rejects(down.size(name), unavailable)
  await assert.rejects(down.sweep(), unavailable)
  await assert.rejects(down.publishNarinfo('p4pclmv1gyja5kzc26npqpia1qqxrf0l', 'x'), unavailable)
  // A large upload fails at its first part (or at finish), and leaves nothing.
  const blob = await down.begin(fileHash)
  await assert.rejects(async () => { await feed(blob, body); await blob.finish() }, unavailable)
  await blob.discard()
  // A small one fails at commit.
  const small = randomNar(1000)
  const smallBlob = await down.begin(small.fileHash)
  await feed(smallBlob, small.body)
  await smallBlob.finish()
  await assert.rejects(smallBlob.commit(small.name), unavailable)
  await smallBlob.discard()
  assert.equal((await listBucket(engine, bucket)).size, 0)
})
