/**
 * nar-ingest.ts verifying into an S3 bucket (the real verifier, the real engine): a large NAR's
 * parts go up while it is verified, and it becomes an object only when the cache layer commits
 * it after verification passed. One refused for any reason (wrong hash, a NAR cut short, a
 * broken compressed stream) leaves no object and no unfinished multipart upload.
 */
import { test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { Readable } from 'node:stream'
import { isNarwhalError } from '../../src/errors.js'
import { createCompressor } from '../../src/nix/codecs.js'
import { encodeNix32 } from '../../src/nix/nix32.js'
import { ingestNar, type IngestOptions } from '../../src/storage/nar-ingest.js'
import { S3BlobStore } from '../../src/storage/s3-blob-store.js'
import { PART_BYTES } from '../../src/storage/s3-pending-blob.js'
import { createBucket, listBucket, s3Engine, storageUrl, unfinishedUploads } from '../helpers/s3.js'
import { nar } from '../unit/nix-test-helpers.js'

const engine = s3Engine()
Object.assign(process.env, { AWS_ACCESS_KEY_ID: engine.accessKey, AWS_SECRET_ACCESS_KEY: engine.secretKey })

const LIMITS: IngestOptions = { maxBytes: 1 << 30, maxNarSize: 1 << 30, declaredBytes: 0, reserveBytes: 0 }

async function storeFor (t: TestContext): Promise<{ store: S3BlobStore, bucket: string }> {
  const bucket = await createBucket(engine)
  const store = await S3BlobStore.open(storageUrl(engine, bucket), { redirectNars: false })
  t.after(() => store.close())
  return { store, bucket }
}

function fileHashOf (bytes: Buffer): string {
  return encodeNix32(createHash('sha256').update(bytes).digest())
}

/** The body as a socket gives it: 64 KiB chunks. */
function chunked (body: Buffer): Readable {
  return Readable.from((function * () { for (let i = 0; i < body.length; i += 65_536) yield body.subarray(i, i + 65_536) })())
}

async function compress (body: Buffer, method: 'zstd' | 'xz'): Promise<Buffer> {
  const parts: Buffer[] = []
  for await (const chunk of chunked(body).pipe(createCompressor(method, 1))) parts.push(chunk as Buffer)
  return Buffer.concat(parts)
}

async function assertNothingLeft (bucket: string): Promise<void> {
  assert.deepEqual(await unfinishedUploads(engine, bucket), [], 'no unfinished multipart upload')
  assert.deepEqual([...(await listBucket(engine, bucket)).keys()], [], 'no object')
}

test('a large zstd NAR verified into the bucket becomes nar/<hash>.nar.zst at commit, byte for byte', async (t) => {
  const { store, bucket } = await storeFor(t)
  const body = await compress(nar({ type: 'regular', contents: randomBytes(2 * PART_BYTES + 1234) }), 'zstd')
  assert.ok(body.length > 2 * PART_BYTES)
  const fileHash = fileHashOf(body)
  const { nar: ingested, blob } = await ingestNar(chunked(body), fileHash, store, LIMITS)
  try {
    assert.equal(ingested.compression, 'zstd')
    assert.deepEqual(await unfinishedUploads(engine, bucket), [`nar/${fileHash}.nar.zst`], 'its parts are up, under its own name')
    assert.equal((await listBucket(engine, bucket)).size, 0, 'verified but not committed: not visible')
    await blob.commit(ingested)
  } finally {
    await blob.discard()
  }
  assert.deepEqual(await unfinishedUploads(engine, bucket), [])
  const read = await store.open(ingested)
  assert.ok(read?.kind === 'body')
  assert.ok((await read.read()).equals(body))
})

test('large NARs refused by verification leave no object and no multipart upload', async (t) => {
  const { store, bucket } = await storeFor(t)
  const valid = nar({ type: 'regular', contents: randomBytes(3 * PART_BYTES) })
  const refusals: Array<{ what: string, body: Buffer, fileHash: string, code: string }> = [
    // Every byte a well-formed NAR, but not the one its name claims: found at the very end.
    { what: 'wrong hash', body: valid, fileHash: fileHashOf(Buffer.from('another NAR')), code: 'NARWHAL_NAR_INVALID' },
    // Named right, but the archive stops short of its end.
    { what: 'cut short', body: valid.subarray(0, valid.length - 4096), fileHash: fileHashOf(valid.subarray(0, valid.length - 4096)), code: '' },
    // A zstd stream whose tail is garbage.
    ...await (async () => {
      const zst = await compress(valid, 'zstd')
      const broken = Buffer.concat([zst.subarray(0, zst.length - 64), randomBytes(64)])
      return [{ what: 'broken zstd', body: broken, fileHash: fileHashOf(broken), code: '' }]
    })()
  ]
  for (const { what, body, fileHash, code } of refusals) {
    await assert.rejects(ingestNar(chunked(body), fileHash, store, LIMITS), (err: unknown) => {
      assert.ok(isNarwhalError(err), `${what}: ${String(err)}`)
      assert.ok(code === '' || err.code === code, `${what}: ${err.code}`)
      assert.ok(err.statusCode >= 400 && err.statusCode < 500, `${what}: a refusal of the upload, not a failure of the store (${err.code})`)
      return true
    }, what)
    await assertNothingLeft(bucket)
  }
})

test('a large NAR over the size limit is refused part-way and leaves nothing', async (t) => {
  const { store, bucket } = await storeFor(t)
  const body = nar({ type: 'regular', contents: randomBytes(3 * PART_BYTES) })
  await assert.rejects(ingestNar(chunked(body), fileHashOf(body), store, { ...LIMITS, maxBytes: 2 * PART_BYTES + 10 }),
    (err: unknown) => isNarwhalError(err) && err.code === 'NARWHAL_TOO_LARGE')
  await assertNothingLeft(bucket)
})
