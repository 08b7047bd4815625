/**
 * The storage upkeep of a serving process (cli/storage-upkeep.ts) against a bucket that cannot be
 * reached at start: the first attempt is logged with its kind and does not throw, and once the
 * endpoint is back a retry sweeps the unfinished upload a killed uploader left and publishes
 * nix-cache-info, by itself.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { CreateMultipartUploadCommand } from '@aws-sdk/client-s3'
import { startStorageUpkeep } from '../../src/cli/storage-upkeep.js'
import { S3BlobStore } from '../../src/storage/s3-blob-store.js'
import { S3Objects } from '../../src/storage/s3-objects.js'
import { createBucket, listBucket, s3Client, s3Engine, storageUrl, unfinishedUploads } from '../helpers/s3.js'
import { TcpProxy } from '../helpers/tcp-proxy.js'

const engine = s3Engine()
Object.assign(process.env, { AWS_ACCESS_KEY_ID: engine.accessKey, AWS_SECRET_ACCESS_KEY: engine.secretKey })

test('storage upkeep: an unreachable bucket at start is logged with its kind and retried; the sweep and nix-cache-info happen once it is back', { timeout: 60_000 }, async (t) => {
  const bucket = await createBucket(engine)
  const client = s3Client(engine)
  try {
    await client.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: 'nar/left-by-a-killed-upload.nar' }))
  } finally { client.destroy() }
  assert.equal((await unfinishedUploads(engine, bucket)).length, 1)

  const direct = await S3BlobStore.open(storageUrl(engine, bucket), { redirectNars: false })
  t.after(() => direct.close())
  const target = new URL(engine.endpoint)
  const proxy = new TcpProxy({ host: target.hostname, port: Number(target.port) })
  await proxy.start()
  await proxy.stop()
  t.after(async () => await proxy.stop())
  // No grace: the upload above counts as left by a killed uploader.
  const store = new S3BlobStore(new S3Objects({ ...direct.objects.location, endpoint: `http://127.0.0.1:${proxy.port}` }), { redirectNars: false, sweepGraceMs: 0 })
  t.after(() => store.close())

  const warnings: Array<Record<string, unknown>> = []
  const log = { warn: (fields: Record<string, unknown>) => { warnings.push(fields) }, info: () => {} }
  const upkeep = await startStorageUpkeep(store, 'StoreDir: /nix/store\n', log as never, 200)
  t.after(() => upkeep.stop())
  assert.equal(warnings[0]?.code, 'NARWHAL_STORAGE_UNAVAILABLE')
  let done = false
  const finished = upkeep.done.then(() => { done = true })
  await new Promise(resolve => setTimeout(resolve, 600))
  assert.equal(done, false)
  assert.ok(warnings.length >= 2, 'retried while the bucket stays unreachable')
  assert.equal((await listBucket(engine, bucket)).has('nix-cache-info'), false)

  await proxy.start()
  await finished
  assert.equal(done, true)
  assert.deepEqual(await unfinishedUploads(engine, bucket), [])
  assert.equal((await listBucket(engine, bucket)).has('nix-cache-info'), true)
})
