/**
 * narwhal's server with its NARs in an S3 bucket (Ceph's RGW) and stock Nix as the client:
 * `nix copy --to` pushes through the real verify-then-commit path into the bucket, `nix copy
 * --from` substitutes back, streamed or through a 307 to a presigned URL; with the object store
 * gone, NAR reads and writes answer 503 with Retry-After while narinfos are still served, and
 * the server recovers by itself when the store is back.
 */
import { test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import path from 'node:path'
import { generateKeyPair } from '../../src/signing/keys.js'
import { S3BlobStore } from '../../src/storage/s3-blob-store.js'
import { PART_BYTES } from '../../src/storage/s3-pending-blob.js'
import { buildClosure, netrcFile, nixKeyPair, nixOk, tempDir, type TestClosure } from '../helpers/nix.js'
import { startServer, type TestServer } from '../helpers/server.js'
import { createBucket, listBucket, s3Engine, storageUrl, unfinishedUploads } from '../helpers/s3.js'
import { TcpProxy } from '../helpers/tcp-proxy.js'
import { freshNar, get, makeNarinfo, put } from '../helpers/upload.js'

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

test('object store down: NAR reads and writes are 503 with Retry-After, narinfos still served, and it recovers by itself', async (t) => {
  const bucket = await createBucket(engine)
  const proxy = new TcpProxy({ host: '127.0.0.1', port: Number(new URL(engine.endpoint).port) })
  await proxy.start()
  t.after(async () => await proxy.stop())
  const url = `s3://${bucket}?endpoint=127.0.0.1:${proxy.port}&scheme=http`
  const blobs = S3BlobStore.fromUrl(url, { redirectNars: false })
  t.after(() => blobs.close())
  const uploader = generateKeyPair('test-uploader-1')
  const server = await startServer(t, { blobs, trustedKeys: [uploader.publicKeyText] })
  const token = await server.token('push')
  const stored = await freshNar('xz')
  assert.equal((await put(`${server.url}/${stored.url}`, stored.bytes, token)).status, 201)
  const narinfo = makeNarinfo(stored, { keys: [uploader.secretKey] })
  const accepted = await put(`${server.url}/${stored.hashPart}.narinfo`, narinfo, token, { 'content-type': 'text/x-nix-narinfo' })
  assert.equal(accepted.status, 201, accepted.body)

  await proxy.stop()
  const read = await get(`${server.url}/${stored.url}`)
  assert.equal(read.status, 503, read.body)
  assert.equal(read.headers['retry-after'], '5')
  assert.match(read.body, /^NARWHAL_STORAGE_UNAVAILABLE/)
  assert.doesNotMatch(read.body, new RegExp(String(proxy.port)), 'the store\'s address stays in the log')
  const fresh = await freshNar('xz')
  const write = await put(`${server.url}/${fresh.url}`, fresh.bytes, token)
  assert.equal(write.status, 503, write.body)
  assert.equal(write.headers['retry-after'], '5')
  const info = await get(`${server.url}/${stored.hashPart}.narinfo`)
  assert.equal(info.status, 200, 'narinfos come from the database')
  assert.equal(info.body, narinfo)

  await proxy.start()
  const again = await get(`${server.url}/${stored.url}`)
  assert.equal(again.status, 200, again.body)
  assert.ok(again.bytes.equals(stored.bytes))
  assert.equal((await put(`${server.url}/${fresh.url}`, fresh.bytes, token)).status, 201)
  assert.deepEqual(await unfinishedUploads(engine, bucket), [])
  // The accepted narinfo went into the bucket too, after its NAR.
  assert.deepEqual([...(await listBucket(engine, bucket)).keys()].sort(), [stored.url, fresh.url, `${stored.hashPart}.narinfo`].sort())
})
