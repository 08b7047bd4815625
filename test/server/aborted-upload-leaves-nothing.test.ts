/**
 * Rule: an upload the client abandons half-way (a crash, a killed `nix copy`, a dropped network)
 * leaves nothing behind: the temp file in store/tmp is removed, no NAR appears in store/nar, no
 * row is written, and the server keeps serving, including a complete upload of the same NAR.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import net from 'node:net'
import { uploadInFlight } from '../helpers/backend.js'
import { startServer } from '../helpers/server.js'
import { eventually, freshNar, get, put, rowCounts, sleep } from '../helpers/upload.js'

test('a client that disconnects mid-upload leaves no file and no row, and the server still answers', async (t) => {
  const server = await startServer(t)
  // Random content does not compress, so the file is about as large as the data: ~20 MiB, so that
  // half of it is more than an S3 part (8 MiB) and a bucket shows the upload begun too.
  const nar = await freshNar('zstd', { randomBytes: 20 * 1024 * 1024 })
  const token = await server.token('push')
  const half = nar.bytes.subarray(0, Math.floor(nar.bytes.length / 2))

  const socket = net.connect(server.port, '127.0.0.1')
  await new Promise<void>((resolve, reject) => { socket.once('connect', resolve); socket.once('error', reject) })
  socket.on('error', () => {})
  socket.write(`PUT /${nar.url} HTTP/1.1\r\nHost: 127.0.0.1:${server.port}\r\nAuthorization: Bearer ${token}\r\n` +
    `Content-Type: application/x-nix-nar\r\nContent-Length: ${nar.bytes.length}\r\n\r\n`)
  socket.write(half)

  // Proof that the upload really was in flight: its temp file (or multipart upload) exists before the client goes away.
  const inFlight = await eventually(async () => uploadInFlight(await server.storedFiles()))
  assert.ok(inFlight, 'the half-sent upload has a temp file in store/tmp, or a multipart upload in the bucket')
  socket.destroy()

  const cleaned = await eventually(async () => (await server.storedFiles()).length === 0)
  assert.ok(cleaned, `files left behind: ${(await server.storedFiles()).join(', ')}`)
  await sleep(200)
  assert.deepEqual(await server.storedFiles(), [])
  assert.deepEqual(await rowCounts(server), { narFiles: 0, narinfos: 0, refs: 0, auxFiles: 0 })
  assert.equal((await server.cache.metadata.narFiles.get(nar.fileHash)), undefined)

  const info = await get(`${server.url}/nix-cache-info`)
  assert.equal(info.status, 200)
  assert.match(info.body, /^StoreDir: \/nix\/store\n/)
  const missing = await get(`${server.url}/${nar.url}`)
  assert.equal(missing.status, 404)

  // The same NAR, sent whole, is accepted afterwards.
  const whole = await put(`${server.url}/${nar.url}`, nar.bytes, token)
  assert.equal(whole.status, 201, whole.body)
  assert.equal((await server.storedFiles()).length, 1)
  assert.equal((await server.cache.metadata.narFiles.get(nar.fileHash))?.narSize, Number(nar.narSize))
})

test('a client that disconnects after the headers, before any body byte, leaves nothing', async (t) => {
  const server = await startServer(t)
  const nar = await freshNar('zstd')
  const socket = net.connect(server.port, '127.0.0.1')
  await new Promise<void>((resolve, reject) => { socket.once('connect', resolve); socket.once('error', reject) })
  socket.on('error', () => {})
  socket.write(`PUT /${nar.url} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${(await server.token('push'))}\r\n` +
    `Content-Length: ${nar.bytes.length}\r\n\r\n`)
  await sleep(150)
  socket.destroy()
  const cleaned = await eventually(async () => (await server.storedFiles()).length === 0)
  assert.ok(cleaned, `files left behind: ${(await server.storedFiles()).join(', ')}`)
  assert.deepEqual(await rowCounts(server), { narFiles: 0, narinfos: 0, refs: 0, auxFiles: 0 })
  assert.equal((await get(`${server.url}/healthz`)).status, 200)
})
