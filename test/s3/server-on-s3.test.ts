/**
 * narwhal's server with its NARs in an S3 bucket (Ceph's RGW) and stock Nix as the client:
 * `nix copy --to` pushes through the real verify-then-commit path into the bucket, `nix copy
 * --from` substitutes back, streamed or through a 307 to a presigned URL. (The object store
 * stopped under a server: object-store-outage.test.ts.)
 */
import { test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import path from 'node:path'
import { S3BlobStore } from '../../src/storage/s3-blob-store.js'
import { PART_BYTES } from '../../src/storage/s3-pending-blob.js'
import { buildClosure, netrcFile, nixKeyPair, nixOk, tempDir, type TestClosure } from '../helpers/nix.js'
import { startServer, type TestServer } from '../helpers/server.js'
import { createBucket, listBucket, s3Engine, storageUrl, unfinishedUploads } from '../helpers/s3.js'
import { get } from '../helpers/upload.js'

const engine = s3Engine()
Object.assign(process.env, { AWS_ACCESS_KEY_ID: engine.accessKey, AWS_SECRET_ACCESS_KEY: engine.secretKey })

async function serverOnBucket (t: TestContext, url: string, redirectNars: boolean, trustedKeys: string[]): Promise<TestServer> {
  const blobs = S3BlobStore.fromUrl(url, { redirectNars })
  t.after(() => blobs.close())
  return await startServer(t, { trustedKeys, blobs })
}

async function push (server: TestServer, secretFile: string, closure: TestClosure): Promise<void> {
  await nixOk(['copy', '--to', `${server.url}?secret-key=${secretFile}&compression=none`, closure.top],
    { config: [`netrc-file = ${netrcFile(await server.token('push'))}`] })
}

async function substitute (server: TestServer, publicKey: string, closure: TestClosure): Promise<void> {
  const store = tempDir('narwhal-store-')
  const trust = [`trusted-public-keys = ${publicKey}`]
  await nixOk(['copy', '--from', server.url, '--to', store, closure.top], { config: trust })
  assert.ok(readFileSync(path.join(store, closure.data, 'random.bin')).equals(readFileSync(path.join(closure.data, 'random.bin'))))
  await nixOk(['store', 'verify', '--recursive', '--store', store, closure.top], { config: trust })
}

test('nix copy pushes into the bucket through the server and substitutes back, streamed and redirected', async (t) => {
  const key = await nixKeyPair('test-uploader-1')
  const bucket = await createBucket(engine)
  const streamed = await serverOnBucket(t, storageUrl(engine, bucket), false, [key.publicKey])
  const closure = await buildClosure({ dataBytes: 2 * PART_BYTES })
  await push(streamed, key.secretFile, closure)
  const objects = await listBucket(engine, bucket)
  const nars = [...objects.keys()].filter(k => k.startsWith('nar/'))
  assert.equal(nars.length, 3, [...objects.keys()].join(' '))
  assert.ok(nars.some(k => /-\d+"$/.test(objects.get(k)?.etag ?? '')), 'the large NAR went up in parts')
  assert.deepEqual(await unfinishedUploads(engine, bucket), [])
  await substitute(streamed, key.publicKey, closure)

  // A range of the large NAR, streamed from the bucket by the server.
  const large = nars.reduce((a, b) => (objects.get(a)?.size ?? 0) >= (objects.get(b)?.size ?? 0) ? a : b)
  const ranged = await get(`${streamed.url}/${large}`, undefined, { range: `bytes=${PART_BYTES - 5}-${PART_BYTES + 4}` })
  assert.equal(ranged.status, 206)
  assert.equal(ranged.bytes.length, 10)
  const whole = await get(`${streamed.url}/${large}`)
  assert.ok(ranged.bytes.equals(whole.bytes.subarray(PART_BYTES - 5, PART_BYTES + 5)))

  // Another server on the same bucket that redirects: its own database, so the closure is pushed
  // to it too (the NARs are already there, byte for byte), then substituted through 307s.
  const redirecting = await serverOnBucket(t, storageUrl(engine, bucket), true, [key.publicKey])
  await push(redirecting, key.secretFile, closure)
  const answer = await fetch(`${redirecting.url}/${large}`, { redirect: 'manual' })
  assert.equal(answer.status, 307)
  assert.match(answer.headers.get('location') ?? '', new RegExp(`^${engine.endpoint}/${bucket}/${large.replaceAll('.', '\\.')}\\?.*X-Amz-Signature=`))
  await substitute(redirecting, key.publicKey, closure)
  // A HEAD is answered by the server itself: the presigned URL is good for GET only.
  const head = await fetch(`${redirecting.url}/${large}`, { method: 'HEAD' })
  assert.equal(head.status, 200)
  assert.equal(head.headers.get('content-length'), String(objects.get(large)?.size))
})
