/**
 * Rule: time limits are on silence, never on the length of a transfer. A socket on which no byte
 * moves for timeouts.idleSeconds is closed: a stalled upload leaves nothing behind (no temp file,
 * no row) and a download to a client that stopped reading releases its file. Headers must be
 * complete within timeouts.headersSeconds, however busily they trickle in (slowloris). An upload
 * that is slow but keeps moving is never cut, however long it takes in all, and the server's own
 * pauses (after the body, or in the middle of it) are not the client's silence.
 *
 * Raw sockets (node:net), because no HTTP client stalls on purpose.
 */
import { test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { readdirSync, readlinkSync } from 'node:fs'
import net from 'node:net'
import { UPLOAD_BATCH_ROUTE } from '../../src/api/v1.js'
import { bzip2Threads, MAX_BZIP2_THREADS } from '../../src/nix/bzip2-thread.js'
import { createDecoder } from '../../src/nix/codecs.js'
import { sqliteOnly, uploadInFlight } from '../helpers/backend.js'
import { startServer, type TestServer } from '../helpers/server.js'
import { eventually, freshNar, get, parseRaw, put, rowCounts, sleep } from '../helpers/upload.js'
import { narFilePath } from '../../src/storage/layout.js'

/** Short timeouts, so the tests take seconds; the defaults are 60 s idle and 30 s for headers. */
const SHORT = { NARWHAL_IDLE_TIMEOUT_SECONDS: '2', NARWHAL_HEADERS_TIMEOUT_SECONDS: '1' }

interface OpenSocket {
  socket: net.Socket
  received: () => Buffer
  /** Resolves when the server closed the connection (ended or reset it). */
  closed: Promise<void>
  isClosed: () => boolean
}

/**
 * A connect function whose sockets are destroyed when the test ends. Call it before startServer:
 * after-hooks run in the order registered, and a test that fails with a socket still open must
 * not leave the server's close waiting for that socket.
 */
function sockets (t: TestContext): (port: number) => Promise<OpenSocket> {
  const opened: net.Socket[] = []
  t.after(() => { for (const socket of opened) socket.destroy() })
  return async (port) => {
    const socket = net.connect(port, '127.0.0.1')
    opened.push(socket)
    await new Promise<void>((resolve, reject) => { socket.once('connect', resolve); socket.once('error', reject) })
    const chunks: Buffer[] = []
    let isClosed = false
    socket.on('data', (chunk: Buffer) => chunks.push(chunk))
    socket.on('error', () => {})
    const closed = new Promise<void>(resolve => socket.once('close', () => { isClosed = true; resolve() }))
    return { socket, received: () => Buffer.concat(chunks), closed, isClosed: () => isClosed }
  }
}

/** Waits for `promise` at most `ms`; false when it did not settle in time. */
async function within (promise: Promise<void>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<boolean>(resolve => { timer = setTimeout(() => resolve(false), ms) })
  try {
    return await Promise.race([promise.then(() => true), timeout])
  } finally {
    clearTimeout(timer)
  }
}

/**
 * Makes syncing every verified temp file take `ms` more: a stand-in for fsync of a huge NAR on a
 * slow disk, the server's own work after a body.
 */
function slowSyncs (server: TestServer, ms: number): void {
  const blobs = server.cache.blobs
  const begin = blobs.begin.bind(blobs)
  blobs.begin = async () => {
    const blob = await begin()
    const finish = blob.finish.bind(blob)
    blob.finish = async () => {
      await sleep(ms)
      await finish()
    }
    return blob
  }
}

/** Paths this process holds open file descriptors on (Linux /proc). */
function openFiles (): string[] {
  const paths: string[] = []
  for (const fd of readdirSync('/proc/self/fd')) {
    try { paths.push(readlinkSync(`/proc/self/fd/${fd}`)) } catch { /* closed meanwhile */ }
  }
  return paths
}

test('headers trickled a byte at a time are cut off after timeouts.headersSeconds (slowloris)', async (t) => {
  // The idle timeout is long here, so only the headers timeout can close the socket.
  const connect = sockets(t)
  const server = await startServer(t, { env: { NARWHAL_IDLE_TIMEOUT_SECONDS: '60', NARWHAL_HEADERS_TIMEOUT_SECONDS: '1' } })
  const client = await connect(server.port)
  client.socket.write('GET /nix-cache-info HTTP/1.1\r\nHost: x\r\n')
  const started = Date.now()
  let sent = 0
  while (!client.isClosed() && Date.now() - started < 20_000) {
    client.socket.write(`X-Slow-${sent++}: y\r\n`)
    await sleep(200)
  }
  assert.ok(client.isClosed(), 'the server closed a connection whose headers never ended')
  assert.ok(sent >= 4, `the headers kept arriving (${sent} lines) until the server gave up`)
  const answer = client.received()
  if (answer.length > 0) assert.equal(parseRaw(answer).status, 408, 'if anything is answered, it is 408')
  assert.equal((await get(`${server.url}/healthz`)).status, 200)
})

test('an upload that stalls mid-body is closed after timeouts.idleSeconds and leaves nothing; the server goes on', async (t) => {
  const connect = sockets(t)
  const server = await startServer(t, { env: SHORT })
  // Half of it more than an S3 part (8 MiB): a bucket shows the upload begun too.
  const nar = await freshNar('zstd', { randomBytes: 20 * 1024 * 1024 })
  const token = await server.token('push')
  const client = await connect(server.port)
  // First a whole request on the same connection, as curl reuses its connections: the idle
  // timeout must hold for a kept-alive connection's later requests too.
  client.socket.write('GET /nix-cache-info HTTP/1.1\r\nHost: x\r\n\r\n')
  assert.ok(await eventually(() => client.received().includes('Priority: ')), 'the first request was answered')
  client.socket.write(`PUT /${nar.url} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\n` +
    `Content-Type: application/x-nix-nar\r\nContent-Length: ${nar.bytes.length}\r\n\r\n`)
  client.socket.write(nar.bytes.subarray(0, Math.floor(nar.bytes.length / 2)))

  assert.ok(await eventually(async () => uploadInFlight(await server.storedFiles())), 'the upload was in flight: a temp file or multipart upload exists')
  // The client now says nothing and keeps the socket open; only the server can end this.
  assert.ok(await within(client.closed, 20_000), 'the server closed the stalled upload')
  assert.ok(await eventually(async () => (await server.storedFiles()).length === 0), `files left behind: ${(await server.storedFiles()).join(', ')}`)
  assert.deepEqual(await rowCounts(server), { narFiles: 0, narinfos: 0, refs: 0, auxFiles: 0 })

  assert.equal((await get(`${server.url}/nix-cache-info`)).status, 200)
  const whole = await put(`${server.url}/${nar.url}`, nar.bytes, token)
  assert.equal(whole.status, 201, whole.body)
})

test('an upload that is slow but keeps moving succeeds, though it takes longer than the idle timeout', async (t) => {
  const connect = sockets(t)
  const server = await startServer(t, { env: SHORT })
  const nar = await freshNar('zstd', { randomBytes: 64 * 1024 })
  const client = await connect(server.port)
  client.socket.write(`PUT /${nar.url} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${(await server.token('push'))}\r\n` +
    `Content-Type: application/x-nix-nar\r\nContent-Length: ${nar.bytes.length}\r\nConnection: close\r\n\r\n`)
  // Ten pieces half a second apart: about 5 s in all against a 2 s idle timeout.
  const pieces = 10
  const size = Math.ceil(nar.bytes.length / pieces)
  const started = Date.now()
  for (let offset = 0; offset < nar.bytes.length; offset += size) {
    assert.equal(client.isClosed(), false, `the server cut the upload off after ${Date.now() - started} ms`)
    client.socket.write(nar.bytes.subarray(offset, offset + size))
    await sleep(500)
  }
  assert.ok(Date.now() - started > 2000 * 2, 'the upload took more than twice the idle timeout')
  assert.ok(await within(client.closed, 20_000), 'the server answered and closed (Connection: close)')
  const answer = parseRaw(client.received())
  assert.equal(answer.status, 201, answer.rest.toString('utf8'))
  assert.equal((await server.cache.metadata.narFiles.get(nar.fileHash))?.fileSize, nar.bytes.length)
})

test('a download to a client that stops reading is closed after the idle timeout and its file released', sqliteOnly('watches the NAR file the server holds open (/proc/self/fd)'), async (t) => {
  const connect = sockets(t)
  const server = await startServer(t, { env: SHORT })
  // Far more than the socket buffers of both ends hold, so the server must wait for the client.
  const nar = await freshNar('zstd', { randomBytes: 32 * 1024 * 1024 })
  assert.equal((await put(`${server.url}/${nar.url}`, nar.bytes, (await server.token('push')))).status, 201)
  const narFile = narFilePath(server.cache.layout, nar.fileHash)

  const serverSide = new Promise<net.Socket>(resolve => server.app.server.once('connection', resolve))
  const client = await connect(server.port)
  const serverSocket = await serverSide
  // Paused before the request: reading even a moment first could take the whole NAR on loopback
  // (it happened under load), and then nothing stalls.
  client.socket.pause()
  client.socket.write(`GET /${nar.url} HTTP/1.1\r\nHost: x\r\n\r\n`)
  assert.ok(await eventually(() => openFiles().includes(narFile)), 'the download started: the server holds the NAR file open')

  // The paused client reads nothing, so it cannot see the close; the server's side shows it.
  const released = await eventually(() => !openFiles().includes(narFile), 20_000)
  assert.ok(released, 'the server closed the NAR file of the stalled download')
  // The file can be released a moment before the socket is marked destroyed: either order is the rule kept.
  assert.ok(await eventually(() => serverSocket.destroyed), 'the server destroyed the stalled connection')

  client.socket.resume()
  await within(client.closed, 20_000)
  const answer = parseRaw(client.received())
  assert.equal(answer.status, 200)
  assert.ok(answer.rest.length < nar.bytes.length, `the client got ${answer.rest.length} of ${nar.bytes.length} bytes, not all`)
  assert.equal((await get(`${server.url}/${nar.url}`)).bytes.length, nar.bytes.length, 'the next download is whole')
})

test('the server\'s own work after the body (a slow fsync) is not the client\'s silence: the upload is answered', async (t) => {
  const server = await startServer(t, { env: SHORT })
  slowSyncs(server, 2 * 2000)
  const nar = await freshNar('zstd')
  const answer = await put(`${server.url}/${nar.url}`, nar.bytes, (await server.token('push')))
  assert.equal(answer.status, 201, answer.body)
  assert.equal((await server.cache.metadata.narFiles.get(nar.fileHash))?.fileSize, nar.bytes.length)
})

test('a bzip2 upload waiting for a decoder thread is the server\'s wait, not the client\'s silence: it is answered', async (t) => {
  const server = await startServer(t, { env: SHORT })
  // Every decoder thread taken, as by other bzip2 uploads still decoding (the server runs in this
  // process, so these are the threads its uploads wait for).
  const busy = Array.from({ length: MAX_BZIP2_THREADS }, () => createDecoder('bzip2', () => {}))
  t.after(() => { for (const decoder of busy) decoder.close() })
  assert.deepEqual(bzip2Threads(), { running: MAX_BZIP2_THREADS, waiting: 0 })
  // Far more than the sockets' buffers hold: while the server waits for a thread without reading,
  // no byte of the rest can move.
  const nar = await freshNar('bzip2', { randomBytes: 8 * 1024 * 1024 })
  const answer = put(`${server.url}/${nar.url}`, nar.bytes, (await server.token('push')))
  assert.ok(await eventually(() => bzip2Threads().waiting === 1), 'the upload waits for a thread')
  await sleep(2 * 2000)
  for (const decoder of busy) decoder.close()
  const answered = await answer
  assert.equal(answered.status, 201, answered.body)
  assert.equal((await server.cache.metadata.narFiles.get(nar.fileHash))?.fileSize, nar.bytes.length)
})

test('a batch whose NAR part is refused at its first bytes, then stalls, is closed after the idle timeout', async (t) => {
  // The refused part's rest is drained from the client: its silence there is the client's again.
  const connect = sockets(t)
  const server = await startServer(t, { env: SHORT })
  const client = await connect(server.port)
  const part = '--x\r\nContent-Disposition: form-data; name="nar/' + '0'.repeat(52) + '.nar"; filename="nar"\r\n\r\n'
  client.socket.write(`POST ${UPLOAD_BATCH_ROUTE} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${(await server.token('push'))}\r\n` +
    'Content-Type: multipart/form-data; boundary=x\r\nContent-Length: 1000000\r\n\r\n' + part)
  // lz4, which narwhal cannot verify: refused as soon as its first bytes are read. The rest of
  // the part never comes.
  client.socket.write(Buffer.concat([Buffer.from([0x04, 0x22, 0x4d, 0x18]), Buffer.alloc(4092)]))
  assert.ok(await within(client.closed, 20_000), 'the server closed the stalled batch upload')
  assert.ok(await eventually(async () => (await server.storedFiles()).length === 0), `files left behind: ${(await server.storedFiles()).join(', ')}`)
  assert.equal((await get(`${server.url}/nix-cache-info`)).status, 200)
})

test('an upload refused at its first bytes, whose client then stalls, is answered and closed after the idle timeout', async (t) => {
  const connect = sockets(t)
  const server = await startServer(t, { env: SHORT })
  const client = await connect(server.port)
  client.socket.write(`PUT /nar/${'0'.repeat(52)}.nar HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${(await server.token('push'))}\r\n` +
    'Content-Type: application/x-nix-nar\r\nContent-Length: 1000000\r\n\r\n')
  client.socket.write(Buffer.concat([Buffer.from([0x04, 0x22, 0x4d, 0x18]), Buffer.alloc(4092)]))
  assert.ok(await eventually(() => client.received().includes('\r\n\r\n')), 'the refusal was answered')
  assert.equal(parseRaw(client.received()).status, 415)
  assert.ok(await within(client.closed, 20_000), 'the server closed the connection whose body never came')
  assert.ok(await eventually(async () => (await server.storedFiles()).length === 0), `files left behind: ${(await server.storedFiles()).join(', ')}`)
})

test('a batch whose last part is followed by a slow fsync is answered: the whole request has arrived', async (t) => {
  const server = await startServer(t, { env: SHORT })
  slowSyncs(server, 2 * 2000)
  const nar = await freshNar('zstd', { randomBytes: 256 * 1024 })
  const body = Buffer.concat([
    Buffer.from(`--x\r\nContent-Disposition: form-data; name="${nar.url}"; filename="nar"\r\n\r\n`),
    nar.bytes,
    Buffer.from('\r\n--x--\r\n')
  ])
  const answer = await fetch(server.url + UPLOAD_BATCH_ROUTE, {
    method: 'POST', headers: { authorization: `Bearer ${(await server.token('push'))}`, 'content-type': 'multipart/form-data; boundary=x' }, body
  })
  assert.equal(answer.status, 200)
  assert.deepEqual(((await answer.json()) as { results: Array<{ status: number }> }).results.map(r => r.status), [201])
  assert.equal((await server.cache.metadata.narFiles.get(nar.fileHash))?.fileSize, nar.bytes.length)
})
