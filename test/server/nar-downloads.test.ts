/**
 * Rule (fact sheet §13.14, §13.16): NAR files are served exactly as uploaded: Content-Length of
 * the file, `Accept-Ranges: bytes` honoured with correct 206/416 answers (Nix resumes downloads
 * with `Range: bytes=N-`), immutable caching, and never a transport Content-Encoding (Nix would
 * decompress twice). HEAD gives the same headers and no body.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readdirSync } from 'node:fs'
import net from 'node:net'
import { startServer, type TestServer } from '../helpers/server.js'
import { freshNar, parseRaw, put, rawHttp, request, type Nar } from '../helpers/upload.js'

async function serverWithNar (t: Parameters<typeof startServer>[0]): Promise<{ server: TestServer, nar: Nar }> {
  const server = await startServer(t)
  const nar = await freshNar('xz', { randomBytes: 32 * 1024 })
  assert.equal((await put(`${server.url}/${nar.url}`, nar.bytes, (await server.token('push')))).status, 201)
  return { server, nar }
}

/** A GET of `nar` answers 200 with its length and exactly its bytes. */
async function assertServedWhole (server: TestServer, nar: Nar): Promise<void> {
  const whole = await request(server, 'GET', `/${nar.url}`)
  assert.equal(whole.status, 200)
  assert.equal(whole.headers['content-length'], String(nar.bytes.length))
  assert.ok(whole.bytes.equals(nar.bytes))
}

test('GET of a NAR: 200, the exact bytes, Content-Length, Accept-Ranges, immutable, no Content-Encoding', async (t) => {
  const { server, nar } = await serverWithNar(t)
  // node:http does not decode anything, and the client says it would accept gzip and br.
  const answer = await request(server, 'GET', `/${nar.url}`, { headers: { 'accept-encoding': 'gzip, deflate, br, zstd' } })
  assert.equal(answer.status, 200)
  assert.ok(answer.bytes.equals(nar.bytes), 'served bytes are the uploaded bytes')
  assert.equal(answer.headers['content-length'], String(nar.bytes.length))
  assert.equal(answer.headers['accept-ranges'], 'bytes')
  assert.match(answer.headers['cache-control'] ?? '', /\bimmutable\b/)
  assert.equal(answer.headers['content-encoding'], undefined)
  assert.equal(answer.headers['content-type'], 'application/x-nix-nar')
})

test('HEAD of a present NAR: 200, Content-Length of the file, and no body', async (t) => {
  const { server, nar } = await serverWithNar(t)
  const raw = parseRaw(await rawHttp(server.port, `HEAD /${nar.url} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`))
  assert.equal(raw.status, 200)
  assert.match(raw.head, new RegExp(`\r\ncontent-length: ${nar.bytes.length}\r\n`, 'i'))
  assert.match(raw.head, /\r\naccept-ranges: bytes\r\n/i)
  assert.doesNotMatch(raw.head, /\r\ncontent-encoding:/i)
  assert.equal(raw.rest.length, 0, 'HEAD answer carried a body')
})

test('Range bytes=10-: 206 with Content-Range and the tail of the file', async (t) => {
  const { server, nar } = await serverWithNar(t)
  const size = nar.bytes.length
  const answer = await request(server, 'GET', `/${nar.url}`, { headers: { range: 'bytes=10-' } })
  assert.equal(answer.status, 206)
  assert.equal(answer.headers['content-range'], `bytes 10-${size - 1}/${size}`)
  assert.equal(answer.headers['content-length'], String(size - 10))
  assert.ok(answer.bytes.equals(nar.bytes.subarray(10)))
})

test('Range bytes=0-9 and a suffix bytes=-5: 206 with exactly those bytes', async (t) => {
  const { server, nar } = await serverWithNar(t)
  const size = nar.bytes.length
  const first = await request(server, 'GET', `/${nar.url}`, { headers: { range: 'bytes=0-9' } })
  assert.equal(first.status, 206)
  assert.equal(first.headers['content-range'], `bytes 0-9/${size}`)
  assert.equal(first.headers['content-length'], '10')
  assert.ok(first.bytes.equals(nar.bytes.subarray(0, 10)))

  const suffix = await request(server, 'GET', `/${nar.url}`, { headers: { range: 'bytes=-5' } })
  assert.equal(suffix.status, 206)
  assert.equal(suffix.headers['content-range'], `bytes ${size - 5}-${size - 1}/${size}`)
  assert.ok(suffix.bytes.equals(nar.bytes.subarray(size - 5)))

  // A last byte past the end is clamped to the end (RFC 9110 §14.1.2).
  const clamped = await request(server, 'GET', `/${nar.url}`, { headers: { range: `bytes=${size - 3}-${size + 1000}` } })
  assert.equal(clamped.status, 206)
  assert.equal(clamped.headers['content-range'], `bytes ${size - 3}-${size - 1}/${size}`)
  assert.ok(clamped.bytes.equals(nar.bytes.subarray(size - 3)))

  // Resuming from the last byte.
  const last = await request(server, 'GET', `/${nar.url}`, { headers: { range: `bytes=${size - 1}-` } })
  assert.equal(last.status, 206)
  assert.equal(last.bytes.length, 1)
})

test('a range starting at or beyond the end: 416 with Content-Range bytes */size', async (t) => {
  const { server, nar } = await serverWithNar(t)
  const size = nar.bytes.length
  for (const range of [`bytes=${size}-`, `bytes=${size + 100}-${size + 200}`, 'bytes=-0']) {
    const answer = await request(server, 'GET', `/${nar.url}`, { headers: { range } })
    assert.equal(answer.status, 416, range)
    assert.equal(answer.headers['content-range'], `bytes */${size}`, range)
    assert.match(answer.body, /^NARWHAL_BAD_REQUEST: /)
  }
})

test('a Range header narwhal does not answer (several ranges, another unit) gets the whole file', async (t) => {
  const { server, nar } = await serverWithNar(t)
  for (const range of ['bytes=0-1,5-6', 'items=0-1', 'bytes=abc']) {
    const answer = await request(server, 'GET', `/${nar.url}`, { headers: { range } })
    assert.equal(answer.status, 200, range)
    assert.ok(answer.bytes.equals(nar.bytes), range)
  }
})

test('a NAR of several MiB (128 KiB reads on the event loop): the exact bytes, whole and from an offset', async (t) => {
  const server = await startServer(t)
  const nar = await freshNar('zstd', { randomBytes: 3 * 1024 * 1024 })
  assert.ok(nar.bytes.length > 2 * 1024 * 1024, 'random bytes do not compress')
  assert.equal((await put(`${server.url}/${nar.url}`, nar.bytes, (await server.token('push')))).status, 201)
  await assertServedWhole(server, nar)
  const tail = await request(server, 'GET', `/${nar.url}`, { headers: { range: 'bytes=1048577-' } })
  assert.equal(tail.status, 206)
  assert.ok(tail.bytes.equals(nar.bytes.subarray(1048577)))
})

test('a NAR just over the one-read size (64 KiB), in a few reads: the exact bytes, whole and ranged', async (t) => {
  const server = await startServer(t)
  const nar = await freshNar('zstd', { randomBytes: 300 * 1024 })
  assert.ok(nar.bytes.length > 64 * 1024 && nar.bytes.length < 1024 * 1024)
  assert.equal((await put(`${server.url}/${nar.url}`, nar.bytes, (await server.token('push')))).status, 201)
  await assertServedWhole(server, nar)
  const ranged = await request(server, 'GET', `/${nar.url}`, { headers: { range: 'bytes=1000-200000' } })
  assert.equal(ranged.status, 206)
  assert.ok(ranged.bytes.equals(nar.bytes.subarray(1000, 200001)))
  const head = await request(server, 'HEAD', `/${nar.url}`)
  assert.equal(head.headers['content-length'], String(nar.bytes.length))
  assert.equal(head.bytes.length, 0)
})

/**
 * Downloads `path` over a raw socket, reading slowly (a pause after each 256 KiB), so the server's
 * writes wait on the socket while other downloads go on. Resolves with the body.
 */
function slowDownload (port: number, path: string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    let sincePause = 0
    const socket = net.connect(port, '127.0.0.1', () => socket.write(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`))
    socket.on('data', (chunk: Buffer) => {
      chunks.push(chunk)
      sincePause += chunk.length
      if (sincePause >= 256 * 1024) {
        sincePause = 0
        socket.pause()
        setTimeout(() => socket.resume(), 5)
      }
    })
    socket.on('end', () => { resolve(parseRaw(Buffer.concat(chunks)).rest) })
    socket.on('error', reject)
  })
}

test('large NARs downloaded at once by slow clients each get exactly their own bytes (read buffers are never shared)', async (t) => {
  const server = await startServer(t)
  const nars: Nar[] = []
  // Larger than loopback's socket buffers (a few MiB), so the server's writes wait for the client;
  // within the size read on the event loop into kept buffers (file-body.ts), and beyond it.
  for (const mib of [7, 7, 7, 12]) {
    const nar = await freshNar('zstd', { randomBytes: mib * 1024 * 1024 })
    assert.equal((await put(`${server.url}/${nar.url}`, nar.bytes, (await server.token('push')))).status, 201)
    nars.push(nar)
  }
  for (let round = 0; round < 2; round++) {
    const bodies = await Promise.all(nars.map(async nar => await slowDownload(server.port, `/${nar.url}`)))
    for (const [i, body] of bodies.entries()) {
      assert.ok(body.equals(nars[i]?.bytes ?? Buffer.alloc(0)), `round ${round}, NAR ${i}: ${body.length} bytes, not the uploaded ones`)
    }
  }
})

/** Open file descriptors of this process (the test server runs in it). */
function openFds (): number {
  return readdirSync('/proc/self/fd').length
}

test('a large NAR download (over 8 MiB: thread-pool reads) the client abandons midway: its file is closed, and whole downloads go on and are counted', async (t) => {
  const server = await startServer(t)
  // Larger than loopback's socket buffers, so the server is mid-file when the client goes.
  const nar = await freshNar('zstd', { randomBytes: 24 * 1024 * 1024 })
  assert.equal((await put(`${server.url}/${nar.url}`, nar.bytes, (await server.token('push')))).status, 201)
  const before = openFds()
  const received = await new Promise<number>((resolve, reject) => {
    let bytes = 0
    const socket = net.connect(server.port, '127.0.0.1', () => socket.write(`GET /${nar.url} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`))
    socket.on('data', (chunk: Buffer) => {
      bytes += chunk.length
      if (bytes >= 2 * 1024 * 1024) { socket.pause(); socket.destroy(); resolve(bytes) }
    })
    socket.on('error', reject)
  })
  assert.ok(received < nar.bytes.length, 'the client stopped before the end')
  let after = openFds()
  for (let i = 0; i < 100 && after > before; i++) {
    await new Promise(resolve => setTimeout(resolve, 20))
    after = openFds()
  }
  assert.ok(after <= before, `descriptors left open after the client went away: ${after} against ${before}`)
  for (let i = 0; i < 2; i++) await assertServedWhole(server, nar)
  const metrics = await (await fetch(`${server.url}/metrics`)).text()
  assert.match(metrics, /narwhal_http_requests_total\{method="GET",route="\/nar\/:file",status="200"\} [23]\n/)
})
