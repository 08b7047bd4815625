/**
 * `narwhal export` against the real engine (Ceph's RADOS Gateway) and the real Nix: a cache
 * pushed with `nix copy` is moved into a bucket, and stock Nix substitutes it from the bucket's
 * plain HTTP endpoint, with no narwhal in between.
 */
import { test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { readFileSync, rmSync } from 'node:fs'
import path from 'node:path'
import { createInterface } from 'node:readline'
import { buildClosure, netrcFile, nixKeyPair, nixOk, run, tempDir, type TestClosure } from '../helpers/nix.js'
import { startServer, type TestServer } from '../helpers/server.js'
import { CLI } from '../helpers/server-process.js'
import { awsEnv, createBucket, listBucket, makePublicRead, s3Engine, storageUrl, unfinishedUploads, type S3Engine } from '../helpers/s3.js'
import { narFilePath } from '../../src/storage/layout.js'
import { S3BlobStore } from '../../src/storage/s3-blob-store.js'
import { MULTIPART_PART_BYTES } from '../../src/storage/s3-objects.js'

interface ExportJson {
  nars: { uploaded: number, present: number }
  narinfos: { uploaded: number, present: number }
  otherFiles: { uploaded: number, present: number }
  cacheInfo: { uploaded: number, present: number }
  abortedUploads: number
  youngUploads: number
  leftOut: Array<{ storePath: string, reason: string }>
}

/** The bucket as a replica sees it, with the engine's keys in the environment as the SDK's standard chain finds them. */
async function storeFor (t: TestContext, engine: S3Engine, url: string, sweepGraceMs?: number): Promise<S3BlobStore> {
  Object.assign(process.env, { AWS_ACCESS_KEY_ID: engine.accessKey, AWS_SECRET_ACCESS_KEY: engine.secretKey })
  const store = await S3BlobStore.open(url, { redirectNars: false, sweepGraceMs })
  t.after(() => store.close())
  return store
}

async function exportJson (engine: S3Engine, server: TestServer, url: string): Promise<ExportJson> {
  const result = await run('node', [CLI, 'export', '--storage', url, '--data', server.cache.layout.dataDir, '--json'], { env: awsEnv(engine) })
  assert.equal(result.code, 0, `narwhal export failed:\n${result.stdout}\n${result.stderr}`)
  // { objects, rows }: rows is null when no --database was given.
  const output = JSON.parse(result.stdout) as { objects: ExportJson, rows: unknown }
  assert.equal(output.rows, null)
  return output.objects
}

function hashPart (storePath: string): string {
  return path.basename(storePath).slice(0, 32)
}

/** Every narinfo in the bucket names a NAR that is in the bucket with the size it states. */
async function assertEveryNarinfoHasItsNar (engine: S3Engine, bucket: string): Promise<string[]> {
  const objects = await listBucket(engine, bucket)
  const narinfos = [...objects.keys()].filter(k => k.endsWith('.narinfo'))
  for (const key of narinfos) {
    const text = await (await fetch(`${engine.endpoint}/${bucket}/${key}`)).text()
    const url = /^URL: (.*)$/m.exec(text)?.[1]
    const size = Number(/^FileSize: (\d+)$/m.exec(text)?.[1])
    assert.ok(url !== undefined, `${key} has a URL`)
    assert.equal(objects.get(url)?.size, size, `${key}: its NAR ${url} is in the bucket, whole`)
  }
  return narinfos
}

/** Stock Nix, trusting only the uploader's key, copies the closure from the bucket over HTTP into an empty store and verifies it. */
async function substituteFromBucket (engine: S3Engine, bucket: string, publicKey: string, closure: TestClosure): Promise<void> {
  const cacheUrl = `${engine.endpoint}/${bucket}`
  const store = tempDir('narwhal-store-')
  const trust = [`trusted-public-keys = ${publicKey}`]
  await nixOk(['copy', '--from', cacheUrl, '--to', store, closure.top], { config: trust })
  assert.equal(readFileSync(path.join(store, closure.top, 'dep-ref'), 'utf8').trim(), closure.dep)
  const original = readFileSync(path.join(closure.data, 'random.bin'))
  assert.ok(readFileSync(path.join(store, closure.data, 'random.bin')).equals(original), 'the data path\'s bytes came back')
  await nixOk(['store', 'verify', '--recursive', '--store', store, closure.top], { config: trust })
}

test('a cache exported to a bucket is substituted by stock Nix straight from the bucket; a second export uploads nothing', async (t) => {
  const engine = s3Engine()
  const key = await nixKeyPair('test-uploader-1')
  const server = await startServer(t, { trustedKeys: [key.publicKey] })
  const netrc = netrcFile((await server.token('push')))
  const closure = await buildClosure({ dataBytes: 1024 * 1024 })
  await nixOk(['copy', '--to', `${server.url}?secret-key=${key.secretFile}`, closure.top], { config: [`netrc-file = ${netrc}`] })
  await nixOk(['store', 'copy-log', '--to', server.url, closure.top], { config: [`netrc-file = ${netrc}`] })

  const bucket = await createBucket(engine)
  const first = await exportJson(engine, server, storageUrl(engine, bucket))
  assert.deepEqual([first.nars.uploaded, first.narinfos.uploaded, first.otherFiles.uploaded, first.cacheInfo.uploaded], [3, 3, 1, 1])
  assert.deepEqual(first.leftOut, [])

  const objects = await listBucket(engine, bucket)
  assert.ok(objects.has('nix-cache-info'))
  for (const storePath of closure.all) {
    assert.ok(objects.has(`${hashPart(storePath)}.narinfo`), `${storePath} has its narinfo in the bucket`)
  }
  assert.ok(objects.has(`log/${path.basename(closure.drv)}`), 'the build log is in the bucket')

  await makePublicRead(engine, bucket)
  assert.equal((await assertEveryNarinfoHasItsNar(engine, bucket)).length, 3)
  // The narinfos are the server's, byte for byte (signatures included).
  for (const storePath of closure.all) {
    const fromServer = await (await fetch(`${server.url}/${hashPart(storePath)}.narinfo`)).text()
    const fromBucket = await (await fetch(`${engine.endpoint}/${bucket}/${hashPart(storePath)}.narinfo`)).text()
    assert.equal(fromBucket, fromServer, `${storePath}: the narinfo in the bucket is the server's`)
  }
  await substituteFromBucket(engine, bucket, key.publicKey, closure)
  const log = await nixOk(['log', '--store', tempDir('narwhal-store-'), closure.top],
    { config: [`trusted-public-keys = ${key.publicKey}`, `substituters = ${engine.endpoint}/${bucket}`] })
  assert.match(log, /building top/)

  // Run again: every object is there with the right size, so nothing is written.
  await new Promise(resolve => setTimeout(resolve, 1100))
  const second = await exportJson(engine, server, storageUrl(engine, bucket))
  assert.deepEqual([second.nars.uploaded, second.narinfos.uploaded, second.otherFiles.uploaded, second.cacheInfo.uploaded], [0, 0, 0, 0])
  assert.deepEqual([second.nars.present, second.narinfos.present, second.otherFiles.present, second.cacheInfo.present], [3, 3, 1, 1])
  assert.deepEqual(await listBucket(engine, bucket), objects, 'no object was rewritten')
})

/** A server holding one closure pushed by Nix, and an empty bucket. */
async function oneClosure (t: TestContext): Promise<{ engine: S3Engine, key: Awaited<ReturnType<typeof nixKeyPair>>, server: TestServer, closure: TestClosure, bucket: string }> {
  const engine = s3Engine()
  const key = await nixKeyPair('test-uploader-1')
  const server = await startServer(t, { trustedKeys: [key.publicKey] })
  const closure = await buildClosure()
  await nixOk(['copy', '--to', `${server.url}?secret-key=${key.secretFile}`, closure.top], { config: [`netrc-file = ${netrcFile((await server.token('push')))}`] })
  return { engine, key, server, closure, bucket: await createBucket(engine) }
}

test('an export with a key prefix puts the cache under it, and Nix reads it there', async (t) => {
  const { engine, key, server, closure, bucket } = await oneClosure(t)
  await exportJson(engine, server, storageUrl(engine, bucket, '&prefix=team-a/'))
  const keys = [...(await listBucket(engine, bucket)).keys()]
  assert.ok(keys.length > 0 && keys.every(k => k.startsWith('team-a/')), `every key under team-a/: ${keys.join(' ')}`)
  await makePublicRead(engine, bucket)
  await substituteFromBucket(engine, bucket + '/team-a', key.publicKey, closure)
})

/** A server holding a small closure, then one whose data path is a large NAR of `largeBytes`; and an empty public bucket. */
async function smallAndLarge (t: TestContext, largeBytes: number): Promise<{
  engine: S3Engine, key: Awaited<ReturnType<typeof nixKeyPair>>, server: TestServer, small: TestClosure, large: TestClosure, bucket: string
}> {
  const engine = s3Engine()
  const key = await nixKeyPair('test-uploader-1')
  const server = await startServer(t, { trustedKeys: [key.publicKey] })
  const netrc = netrcFile((await server.token('push')))
  const small = await buildClosure()
  const large = await buildClosure({ dataBytes: largeBytes })
  for (const closure of [small, large]) {
    await nixOk(['copy', '--to', `${server.url}?secret-key=${key.secretFile}&compression=none`, closure.top], { config: [`netrc-file = ${netrc}`] })
  }
  const bucket = await createBucket(engine)
  await makePublicRead(engine, bucket)
  return { engine, key, server, small, large, bucket }
}

test('a killed export leaves a valid cache in the bucket, and running it again completes it', async (t) => {
  // Pushed first, so exported first; the second closure's data path is one large NAR (several
  // multipart parts), still uploading when the first closure's last narinfo is written.
  const { engine, key, server, small, large, bucket } = await smallAndLarge(t, 64 * 1024 * 1024)

  const child = spawn('node', [CLI, 'export', '--storage', storageUrl(engine, bucket), '--data', server.cache.layout.dataDir, '--jobs', '1', '-v'],
    { env: awsEnv(engine), stdio: ['ignore', 'pipe', 'pipe'] })
  let stderr = ''
  child.stderr.on('data', (chunk: Buffer) => { stderr += chunk.toString() })
  const exited = new Promise<number | null>(resolve => child.on('exit', (code) => resolve(code)))
  const lastSmallNarinfo = `uploaded ${hashPart(small.top)}.narinfo`
  let killed = false
  for await (const line of createInterface({ input: child.stdout })) {
    if (!line.startsWith(lastSmallNarinfo)) continue
    // Then killed in the middle of the large NAR's multipart upload: once the upload has begun.
    while (child.exitCode === null && (await unfinishedUploads(engine, bucket)).length === 0) {
      await new Promise(resolve => setTimeout(resolve, 20))
    }
    killed = child.kill('SIGKILL')
    break
  }
  const code = await exited
  assert.ok(killed, `the export ended before it could be killed (exit ${String(code)}):\n${stderr}`)

  const present = await assertEveryNarinfoHasItsNar(engine, bucket)
  assert.ok(present.includes(`${hashPart(small.top)}.narinfo`))
  assert.ok(!present.includes(`${hashPart(large.top)}.narinfo`), 'the kill came before the large closure was complete')
  // What is there is already a usable cache.
  await substituteFromBucket(engine, bucket, key.publicKey, small)

  // The large NAR was cut short mid-way through its multipart upload.
  assert.equal((await unfinishedUploads(engine, bucket)).length, 1)
  const rerun = await exportJson(engine, server, storageUrl(engine, bucket))
  assert.deepEqual(rerun.leftOut, [])
  // Minutes old, it may as well be another export's or a replica's upload in flight: left for a later sweep.
  assert.equal(rerun.abortedUploads, 0)
  assert.equal(rerun.youngUploads, 1)
  assert.equal((await unfinishedUploads(engine, bucket)).length, 1)
  assert.equal(rerun.narinfos.uploaded + rerun.narinfos.present, 6)
  assert.ok(rerun.narinfos.present >= 3, 'the narinfos written before the kill were not sent again')
  assert.equal((await assertEveryNarinfoHasItsNar(engine, bucket)).length, 6)
  await substituteFromBucket(engine, bucket, key.publicKey, large)
  // The multipart NAR is the file narwhal stored, byte for byte.
  const narinfo = await (await fetch(`${engine.endpoint}/${bucket}/${hashPart(large.data)}.narinfo`)).text()
  const narUrl = /^URL: (.*)$/m.exec(narinfo)?.[1] ?? ''
  const fileHash = /^FileHash: sha256:(.*)$/m.exec(narinfo)?.[1] ?? ''
  const fromBucket = Buffer.from(await (await fetch(`${engine.endpoint}/${bucket}/${narUrl}`)).arrayBuffer())
  assert.ok(fromBucket.length > 64 * 1024 * 1024)
  const onDisk = readFileSync(narFilePath(server.cache.layout, fileHash))
  assert.equal(createHash('sha256').update(fromBucket).digest('hex'), createHash('sha256').update(onDisk).digest('hex'))

  // Past the grace, the sweep (a later export's, serve's) frees the killed upload's parts.
  const sweeper = await storeFor(t, engine, storageUrl(engine, bucket), 0)
  await sweeper.sweep(Date.now() + 1000)
  assert.deepEqual(await unfinishedUploads(engine, bucket), [], 'the killed upload\'s parts were freed')
})

test('an export cuts no upload in flight: a multipart upload begun before it (a replica\'s, another export\'s) completes after it', async (t) => {
  const { engine, server, closure, bucket } = await oneClosure(t)
  await makePublicRead(engine, bucket)
  const url = storageUrl(engine, bucket)
  const { objects } = await storeFor(t, engine, url)
  // What a replica does with a large NAR: a multipart upload under its own name, parts sent, not completed yet.
  const name = `nar/${'1'.repeat(52)}.nar`
  const body = randomBytes(MULTIPART_PART_BYTES + 1024)
  const upload = await objects.startMultipart(name, { contentType: 'application/x-nix-nar' })
  const parts = [
    await objects.uploadPart(upload, 1, body.subarray(0, MULTIPART_PART_BYTES)),
    await objects.uploadPart(upload, 2, body.subarray(MULTIPART_PART_BYTES))
  ]

  const exported = await exportJson(engine, server, url)
  assert.deepEqual(exported.leftOut, [])
  assert.equal(exported.abortedUploads, 0)
  assert.equal(exported.youngUploads, 1)
  await objects.completeMultipart(upload, parts)
  assert.ok((await objects.get(name))?.equals(body), 'the upload in flight completed with its bytes')
  assert.equal((await assertEveryNarinfoHasItsNar(engine, bucket)).length, closure.all.length)
})

test('two exports into one bucket at once both finish, and the bucket is the whole cache', async (t) => {
  const { engine, key, server, small, large, bucket } = await smallAndLarge(t, 48 * 1024 * 1024)
  const url = storageUrl(engine, bucket)
  const [a, b] = await Promise.all([exportJson(engine, server, url), exportJson(engine, server, url)])
  for (const run of [a, b]) assert.deepEqual(run.leftOut, [])
  assert.equal(a.abortedUploads + b.abortedUploads, 0, 'neither cut the other\'s uploads')
  assert.equal((await assertEveryNarinfoHasItsNar(engine, bucket)).length, 6)
  assert.deepEqual(await unfinishedUploads(engine, bucket), [])
  await substituteFromBucket(engine, bucket, key.publicKey, large)
  await substituteFromBucket(engine, bucket, key.publicKey, small)
})

test('a missing bucket or refused credentials stop the export with a clear error, writing nothing', async (t) => {
  const engine = s3Engine()
  const server = await startServer(t)
  const missing = await run('node', [CLI, 'export', '--storage', storageUrl(engine, 'no-such-bucket-narwhal'), '--data', server.cache.layout.dataDir],
    { env: awsEnv(engine) })
  assert.equal(missing.code, 2)
  assert.match(missing.stderr, /bucket no-such-bucket-narwhal does not exist at http:\/\/127\.0\.0\.1:\d+; narwhal never creates buckets/)

  const bucket = await createBucket(engine)
  const refused = await run('node', [CLI, 'export', '--storage', storageUrl(engine, bucket), '--data', server.cache.layout.dataDir],
    { env: { ...awsEnv(engine), AWS_SECRET_ACCESS_KEY: 'wrong-secret' } })
  assert.equal(refused.code, 2)
  assert.match(refused.stderr, /refused the credentials for bucket/)
  assert.equal((await listBucket(engine, bucket)).size, 0)

  const unknown = await run('node', [CLI, 'export', '--storage', `${storageUrl(engine, bucket)}&compression=xz`, '--data', server.cache.layout.dataDir],
    { env: awsEnv(engine) })
  assert.equal(unknown.code, 2)
  assert.match(unknown.stderr, /unknown parameter "compression"/)
})

test('a path whose NAR file is missing on disk is left out with everything that references it; the rest is exported', async (t) => {
  const engine = s3Engine()
  const key = await nixKeyPair('test-uploader-1')
  const server = await startServer(t, { trustedKeys: [key.publicKey] })
  const closure = await buildClosure()
  await nixOk(['copy', '--to', `${server.url}?secret-key=${key.secretFile}`, closure.top], { config: [`netrc-file = ${netrcFile((await server.token('push')))}`] })
  const dep = (await server.cache.metadata.narinfos.get(hashPart(closure.dep)))
  const depFile = dep === undefined ? undefined : (await server.cache.metadata.narFiles.getById(dep.narFileId))
  assert.ok(depFile !== undefined)
  rmSync(narFilePath(server.cache.layout, depFile.fileHash))

  const bucket = await createBucket(engine)
  const result = await run('node', [CLI, 'export', '--storage', storageUrl(engine, bucket), '--data', server.cache.layout.dataDir],
    { env: awsEnv(engine) })
  assert.equal(result.code, 1, result.stderr)
  assert.match(result.stdout, new RegExp(`left out ${closure.dep}: its NAR file nar/${depFile.fileHash}\\.nar\\S* is missing on disk`))
  assert.match(result.stdout, new RegExp(`left out ${closure.top}: its reference ${path.basename(closure.dep)} was left out`))
  const narinfos = [...(await listBucket(engine, bucket)).keys()].filter(k => k.endsWith('.narinfo'))
  assert.deepEqual(narinfos, [`${hashPart(closure.data)}.narinfo`])
})
