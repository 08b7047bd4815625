/**
 * storage/s3-objects.ts against the real engine (Ceph's RADOS Gateway): what the export uses
 * today and the S3 blob store will build on, and the one error kind for every failure.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { Readable } from 'node:stream'
import { isNarwhalError } from '../../src/errors.js'
import { MULTIPART_PART_BYTES, S3Objects } from '../../src/storage/s3-objects.js'
import { parseS3Url } from '../../src/storage/s3-url.js'
import { freePort } from '../helpers/server-process.js'
import { createBucket, listBucket, s3Engine, storageUrl, unfinishedUploads, type S3Engine } from '../helpers/s3.js'

/** S3Objects with the engine's keys, as the AWS SDK's standard chain finds them in the environment. */
function objectsFor (t: { after: (fn: () => void) => void }, engine: S3Engine, url: string): S3Objects {
  const saved = { id: process.env.AWS_ACCESS_KEY_ID, secret: process.env.AWS_SECRET_ACCESS_KEY }
  process.env.AWS_ACCESS_KEY_ID = engine.accessKey
  process.env.AWS_SECRET_ACCESS_KEY = engine.secretKey
  const objects = new S3Objects(parseS3Url(url))
  t.after(() => {
    objects.close()
    if (saved.id === undefined) delete process.env.AWS_ACCESS_KEY_ID; else process.env.AWS_ACCESS_KEY_ID = saved.id
    if (saved.secret === undefined) delete process.env.AWS_SECRET_ACCESS_KEY; else process.env.AWS_SECRET_ACCESS_KEY = saved.secret
  })
  return objects
}

async function failureOf (promise: Promise<unknown>): Promise<string> {
  try {
    await promise
  } catch (err) {
    assert.ok(isNarwhalError(err), `not a NarwhalError: ${String(err)}`)
    assert.equal(err.code, 'NARWHAL_STORAGE_UNAVAILABLE')
    return err.message
  }
  assert.fail('it succeeded')
}

test('put, size, get, list and delete, all under the key prefix', async (t) => {
  const engine = s3Engine()
  const bucket = await createBucket(engine)
  const objects = objectsFor(t, engine, storageUrl(engine, bucket, '&prefix=p/q'))
  await objects.checkBucket()
  assert.equal(await objects.size('nar/a.nar'), undefined)
  assert.equal(await objects.get('nar/a.nar'), undefined)
  await objects.put('nar/a.nar', Buffer.from('hello'), { contentType: 'application/x-nix-nar' })
  await objects.put('x.narinfo', 'StorePath: …\n', { contentType: 'text/x-nix-narinfo' })
  assert.equal(await objects.size('nar/a.nar'), 5)
  assert.equal((await objects.get('nar/a.nar'))?.toString(), 'hello')
  const listed = []
  for await (const o of objects.list()) listed.push({ name: o.name, size: o.size })
  assert.deepEqual(listed.sort((a, b) => a.name.localeCompare(b.name)), [{ name: 'nar/a.nar', size: 5 }, { name: 'x.narinfo', size: Buffer.byteLength('StorePath: …\n') }])
  const nars = []
  for await (const o of objects.list('nar/')) nars.push(o.name)
  assert.deepEqual(nars, ['nar/a.nar'])
  // The keys really are under the prefix: another view of the bucket without it sees them there.
  const whole = objectsFor(t, engine, storageUrl(engine, bucket))
  assert.equal(await whole.size('p/q/nar/a.nar'), 5)
  await objects.delete('nar/a.nar')
  assert.equal(await objects.size('nar/a.nar'), undefined)
})

test('a stream larger than a part goes up as a multipart upload and reads back byte for byte', async (t) => {
  const engine = s3Engine()
  const bucket = await createBucket(engine)
  const objects = objectsFor(t, engine, storageUrl(engine, bucket))
  const bytes = randomBytes(2 * MULTIPART_PART_BYTES + 12345)
  // Uneven chunks, as a file or socket gives them.
  const chunks = function * () { for (let i = 0; i < bytes.length; i += 1_000_003) yield bytes.subarray(i, i + 1_000_003) }
  await objects.upload('nar/big.nar', Readable.from(chunks()), { contentType: 'application/x-nix-nar' })
  assert.equal(await objects.size('nar/big.nar'), bytes.length)
  // A multipart object's ETag ends in the number of its parts.
  assert.match((await listBucket(engine, bucket)).get('nar/big.nar')?.etag ?? '', /-3"$/)
  const back = await objects.get('nar/big.nar')
  assert.equal(createHash('sha256').update(back ?? '').digest('hex'), createHash('sha256').update(bytes).digest('hex'))
  // And a small stream in one PUT (Ceph pacific refuses the SDK's default chunked form of it).
  await objects.upload('nar/small.nar', Readable.from([Buffer.from('small')]), { contentType: 'application/x-nix-nar' })
  assert.equal((await objects.get('nar/small.nar'))?.toString(), 'small')
  assert.deepEqual(await unfinishedUploads(engine, bucket), [])
})

test('every failure is NARWHAL_STORAGE_UNAVAILABLE with what to fix: no bucket, refused keys, nothing listening', async (t) => {
  const engine = s3Engine()
  const missing = objectsFor(t, engine, storageUrl(engine, 'no-such-bucket-narwhal'))
  assert.match(await failureOf(missing.checkBucket()), /bucket no-such-bucket-narwhal does not exist .*narwhal never creates buckets/)
  assert.match(await failureOf(missing.put('a', 'b', { contentType: 'text/plain' })), /does not exist/)

  const bucket = await createBucket(engine)
  const refused = objectsFor(t, { ...engine, secretKey: 'wrong' }, storageUrl(engine, bucket))
  assert.match(await failureOf(refused.checkBucket()), /refused the credentials for bucket/)

  const port = await freePort()
  const nowhere = objectsFor(t, engine, `s3://${bucket}?endpoint=127.0.0.1:${port}&scheme=http`)
  assert.match(await failureOf(nowhere.checkBucket()), new RegExp(`cannot reach the object store at http://127\\.0\\.0\\.1:${port} \\(ECONNREFUSED\\)`))
})
