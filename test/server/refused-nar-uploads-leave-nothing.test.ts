/**
 * Rule: a NAR upload is stored only when its bytes hash to the name in the URL and decompress to a
 * well-formed NAR, within limits.narBytes as sent and limits.narSizeBytes decompressed. Every
 * refusal answers 4xx with a body naming the rule, and leaves nothing behind: no file in
 * store/nar or store/tmp, no database row.
 *
 * The bodies are hand-built from real NARs (`nix-store --dump` of fresh store paths, or narwhal's
 * NAR writer); the real Nix client never sends any of them.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { mkdirSync, writeFileSync } from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import type { Limits } from '../../src/config/config.js'
import { extensionFor } from '../../src/nix/compression.js'
import { dumpPath } from '../../src/pusher/nar-writer.js'
import { tempDir } from '../helpers/nix.js'
import { startServer, type TestServer } from '../helpers/server.js'
import { compressBytes, fileHashOf, freshNar, parseRaw, put, rowCounts, ruleOf, sha256, type Answer } from '../helpers/upload.js'

async function assertNothingStored (server: TestServer): Promise<void> {
  assert.deepEqual(await server.storedFiles(), [], 'a refused NAR leaves no file in store/nar or store/tmp')
  assert.deepEqual(await rowCounts(server), { narFiles: 0, narinfos: 0, refs: 0, auxFiles: 0 }, 'a refused NAR leaves no row')
}

async function putNar (server: TestServer, name: string, body: Uint8Array): Promise<Answer> {
  return await put(`${server.url}/nar/${name}`, body, (await server.token('push')), { 'content-type': 'application/x-nix-nar' })
}

test('bytes that do not hash to the name in the URL: 400 NARWHAL_NAR_INVALID', async (t) => {
  const server = await startServer(t)
  const nar = await freshNar('xz')
  const otherName = fileHashOf(randomBytes(32))
  const answer = await putNar(server, `${otherName}.nar.xz`, nar.bytes)
  assert.equal(answer.status, 400)
  assert.equal(ruleOf(answer), 'NARWHAL_NAR_INVALID')
  assert.match(answer.body, new RegExp(`hash to sha256:${nar.fileHash}, not to the sha256:${otherName}`))
  await assertNothingStored(server)
})

for (const method of ['xz', 'zstd', 'gzip', 'bzip2'] as const) {
  test(`truncated ${method} body, named by the hash of the truncated bytes: 400 NARWHAL_NAR_INVALID`, async (t) => {
    const server = await startServer(t)
    const nar = await freshNar(method, { randomBytes: 64 * 1024 })
    const truncated = nar.bytes.subarray(0, Math.floor(nar.bytes.length / 2))
    // The name is right for the bytes sent: only the decompressor can tell that they are cut short.
    const answer = await putNar(server, `${fileHashOf(truncated)}.nar${extensionFor(method)}`, truncated)
    assert.equal(answer.status, 400)
    assert.equal(ruleOf(answer), 'NARWHAL_NAR_INVALID')
    assert.match(answer.body, new RegExp(`^NARWHAL_NAR_INVALID: NAR file is not valid ${method} data`))
    await assertNothingStored(server)
  })
}

test('random bytes (no known magic, not brotli): 400 NARWHAL_NAR_INVALID', async (t) => {
  const server = await startServer(t)
  // Fixed noise (a SHA-256 chain): fresh random bytes are now and then the start of a valid brotli
  // stream, and then the NAR reader is what refuses them (400 NARWHAL_NAR_MALFORMED).
  const body = Buffer.concat(Array.from({ length: 3200 }, (_v, i) => sha256(Buffer.from(`narwhal noise ${i}`))))
  const answer = await putNar(server, `${fileHashOf(body)}.nar`, body)
  assert.equal(answer.status, 400)
  assert.equal(ruleOf(answer), 'NARWHAL_NAR_INVALID')
  assert.match(answer.body, /neither a NAR nor compressed with a method narwhal verifies/)
  await assertNothingStored(server)
})

test('uncompressed body with the NAR magic but a malformed archive: 400 NARWHAL_NAR_MALFORMED', async (t) => {
  const server = await startServer(t)
  const nar = await freshNar('none')
  const cases: Array<[string, Buffer]> = [
    // Cut inside the file contents: the archive never closes.
    ['truncated', nar.nar.subarray(0, nar.nar.length - 64)],
    // "type" replaced by "tyPe": a token the grammar does not allow.
    ['wrong token', Buffer.from(nar.nar.toString('latin1').replace('type', 'tyPe'), 'latin1')],
    // A complete archive followed by more bytes.
    ['trailing bytes', Buffer.concat([nar.nar, Buffer.alloc(8)])],
    // Only the magic.
    ['magic only', nar.nar.subarray(0, 24)]
  ]
  for (const [what, body] of cases) {
    assert.ok(body.subarray(0, 21).equals(nar.nar.subarray(0, 21)), `${what}: still starts with the NAR magic`)
    const answer = await putNar(server, `${fileHashOf(body)}.nar`, body)
    assert.equal(answer.status, 400, `${what}: ${answer.body}`)
    assert.equal(ruleOf(answer), 'NARWHAL_NAR_MALFORMED', what)
    assert.match(answer.body, /malformed NAR|NAR is truncated/, what)
  }
  await assertNothingStored(server)
})

test('a valid compression stream around bytes that are not a NAR: 400 NARWHAL_NAR_MALFORMED', async (t) => {
  const server = await startServer(t)
  for (const method of ['gzip', 'xz', 'zstd'] as const) {
    const body = await compressBytes(Buffer.from('this is not a Nix archive\n'.repeat(100)), method)
    const answer = await putNar(server, `${fileHashOf(body)}.nar`, body)
    assert.equal(answer.status, 400, `${method}: ${answer.body}`)
    assert.equal(ruleOf(answer), 'NARWHAL_NAR_MALFORMED', method)
  }
  await assertNothingStored(server)
})

test('a body with the xz magic but corrupt data: 400 NARWHAL_NAR_INVALID names xz', async (t) => {
  const server = await startServer(t)
  const nar = await freshNar('xz', { randomBytes: 32 * 1024 })
  const corrupt = Buffer.from(nar.bytes)
  // Keep the 12-byte stream header (magic, flags, CRC) and overwrite the first block with noise.
  Buffer.concat(Array.from({ length: 8 }, (_v, i) => sha256(Buffer.from(`xz noise ${i}`)))).copy(corrupt, 12)
  const answer = await putNar(server, `${fileHashOf(corrupt)}.nar.xz`, corrupt)
  assert.equal(answer.status, 400)
  assert.equal(ruleOf(answer), 'NARWHAL_NAR_INVALID')
  assert.match(answer.body, /not valid xz data/)
  await assertNothingStored(server)
})

test('lz4 (which narwhal cannot verify): 415 NARWHAL_UNSUPPORTED_COMPRESSION', async (t) => {
  const server = await startServer(t)
  const nar = await freshNar('lz4')
  assert.equal(nar.url.endsWith('.nar.lz4'), true)
  const answer = await putNar(server, nar.url.slice(4), nar.bytes)
  assert.equal(answer.status, 415)
  assert.equal(ruleOf(answer), 'NARWHAL_UNSUPPORTED_COMPRESSION')
  assert.match(answer.body, /compressed with lz4.*use one of none, xz, zstd, bzip2, gzip, br/)
  await assertNothingStored(server)
})

test('an empty body, named by the hash of nothing: 400 NARWHAL_NAR_INVALID', async (t) => {
  const server = await startServer(t)
  const answer = await putNar(server, `${fileHashOf(Buffer.alloc(0))}.nar`, Buffer.alloc(0))
  assert.equal(answer.status, 400)
  assert.equal(ruleOf(answer), 'NARWHAL_NAR_INVALID')
  assert.match(answer.body, /NAR file is empty/)
  await assertNothingStored(server)
})

/** A server with these limits, set the only way limits are set: a config file. */
async function smallLimitServer (t: Parameters<typeof startServer>[0], limits: Partial<Limits>): Promise<TestServer> {
  const file = path.join(tempDir('narwhal-config-'), 'narwhal.json')
  writeFileSync(file, JSON.stringify({ limits }))
  const server = await startServer(t, { env: { NARWHAL_CONFIG: file } })
  for (const [key, value] of Object.entries(limits)) assert.equal(server.config.limits[key as keyof Limits], value)
  return server
}

/**
 * A PUT on a bare socket: the head and, when given, a chunked body, all in one write. Everything
 * the server sends is collected until it closes; a reset after its answer (it closes without
 * reading the rest of the body) is expected and ignored.
 *
 * The body goes out in one write on purpose: a client that keeps writing after the server closed
 * gets EPIPE from its next write and may never read the answer already waiting in its socket.
 * curl reads while it sends, so it always sees the answer (checked by hand with `curl -T`).
 */
function putOnSocket (server: TestServer, head: string, body: Buffer | undefined): Promise<{ status: number, body: string }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(server.port, '127.0.0.1')
    const received: Buffer[] = []
    const timer = setTimeout(() => socket.destroy(), 10_000)
    let settled = false
    /** Settles once a whole answer is in: the server may keep the connection open after it. */
    const settle = (final: boolean): void => {
      if (settled) return
      const raw = Buffer.concat(received)
      let answer: ReturnType<typeof parseRaw> | undefined
      try { answer = parseRaw(raw) } catch (err) { if (final) { settled = true; reject(err) } return }
      const length = Number(/\r\ncontent-length: (\d+)/i.exec(answer.head)?.[1] ?? NaN)
      if (!final && !(answer.rest.length >= length)) return
      settled = true
      clearTimeout(timer)
      socket.destroy()
      resolve({ status: answer.status, body: answer.rest.toString('utf8') })
    }
    socket.on('data', (chunk: Buffer) => { received.push(chunk); settle(false) })
    socket.on('error', () => {})
    socket.on('close', () => settle(true))
    socket.on('connect', () => {
      const parts: Uint8Array[] = [Buffer.from(head)]
      if (body !== undefined) {
        for (let at = 0; at < body.length; at += 4096) {
          const chunk = body.subarray(at, at + 4096)
          parts.push(Buffer.from(`${chunk.length.toString(16)}\r\n`), chunk, Buffer.from('\r\n'))
        }
        parts.push(Buffer.from('0\r\n\r\n'))
      }
      socket.write(Buffer.concat(parts))
    })
  })
}

test('over limits.narBytes with a declared Content-Length: 413 naming the limit, before any body byte', async (t) => {
  const server = await smallLimitServer(t, { narBytes: 4096 })
  const nar = await freshNar('xz', { randomBytes: 64 * 1024 })
  assert.ok(nar.bytes.length > 4096)
  // Not one byte of the body is sent: the answer must come from the headers alone.
  const answer = await putOnSocket(server, `PUT /${nar.url} HTTP/1.1\r\nHost: 127.0.0.1\r\n` +
    `Authorization: Bearer ${(await server.token('push'))}\r\nContent-Length: ${nar.bytes.length}\r\n\r\n`, undefined)
  assert.equal(answer.status, 413)
  assert.equal(answer.body, `NARWHAL_TOO_LARGE: NAR file of ${nar.bytes.length} bytes is larger than the limit of 4096 bytes (limits.narBytes)\n`)
  await assertNothingStored(server)
})

test('over limits.narBytes without Content-Length (chunked): 413 naming the limit', async (t) => {
  const server = await smallLimitServer(t, { narBytes: 4096 })
  const nar = await freshNar('xz', { randomBytes: 64 * 1024 })
  const answer = await putOnSocket(server, `PUT /${nar.url} HTTP/1.1\r\nHost: 127.0.0.1\r\n` +
    `Authorization: Bearer ${(await server.token('push'))}\r\nTransfer-Encoding: chunked\r\n\r\n`, nar.bytes)
  assert.equal(answer.status, 413)
  assert.equal(answer.body, 'NARWHAL_TOO_LARGE: NAR file is larger than the limit of 4096 bytes (limits.narBytes)\n')
  await assertNothingStored(server)
})

test('a NAR just under limits.narBytes is still accepted', async (t) => {
  const nar = await freshNar('xz')
  const server = await smallLimitServer(t, { narBytes: nar.bytes.length })
  const answer = await putNar(server, nar.url.slice(4), nar.bytes)
  assert.equal(answer.status, 201, answer.body)
  assert.equal((await server.cache.metadata.narFiles.get(nar.fileHash))?.fileSize, nar.bytes.length)
})

/** A well-formed NAR of one file of `size` zero bytes: what a decompression bomb inflates to. */
async function narOfZeros (size: number): Promise<Buffer> {
  const dir = path.join(tempDir('narwhal-bomb-'), 'zeros')
  mkdirSync(dir)
  writeFileSync(path.join(dir, 'zeros'), Buffer.alloc(size))
  const chunks: Buffer[] = []
  for await (const chunk of dumpPath(dir)) chunks.push(chunk)
  return Buffer.concat(chunks)
}

for (const method of ['zstd', 'xz'] as const) {
  test(`a ${method} bomb (a few hundred bytes that decompress to 8 MiB) over limits.narSizeBytes: 413 naming the limit`, async (t) => {
    const limit = 1024 * 1024
    const server = await smallLimitServer(t, { narSizeBytes: limit })
    const body = await compressBytes(await narOfZeros(8 * 1024 * 1024), method)
    // Far under limits.narBytes: only the decompressed size can refuse it.
    assert.ok(body.length < 4096, `${method} body of ${body.length} bytes`)
    const answer = await putNar(server, `${fileHashOf(body)}.nar${extensionFor(method)}`, body)
    assert.equal(answer.status, 413, answer.body)
    assert.equal(answer.body, `NARWHAL_TOO_LARGE: NAR file decompresses to more than the limit of ${limit} bytes (limits.narSizeBytes)\n`)
    await assertNothingStored(server)
  })
}

test('a NAR of exactly limits.narSizeBytes is still accepted', async (t) => {
  const nar = await narOfZeros(64 * 1024)
  const server = await smallLimitServer(t, { narSizeBytes: nar.length })
  const body = await compressBytes(nar, 'zstd')
  const answer = await putNar(server, `${fileHashOf(body)}.nar.zst`, body)
  assert.equal(answer.status, 201, answer.body)
  assert.equal((await server.cache.metadata.narFiles.get(fileHashOf(body)))?.narSize, nar.length)
})
