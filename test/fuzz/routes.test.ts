/**
 * Property-based fuzzing of the HTTP routes: generated requests against one app (buildApp), the
 * way an attacker or a broken client would send them.
 *
 *   methods   GET HEAD PUT POST DELETE PATCH OPTIONS
 *   paths     every route's name pattern, valid and broken (wrong hashes, extensions, traversal
 *             raw and percent-encoded, unicode, very long, duplicate slashes, query strings)
 *   headers   Authorization (every token state, malformed schemes), Content-Type,
 *             Content-Encoding, Range, Content-Length, Expect
 *   bodies    random bytes, NARs in every compression (as made, and mutated), narinfos for them
 *             (signed, unsigned, signed by a stranger, mangled line by line), JSON, multipart
 *             batches (well-formed and damaged)
 *
 * Properties, checked after every request:
 *   - the status is never >= 500
 *   - store/tmp is empty once the answer is out
 *   - a refused request (and every read) leaves the database rows and the files in store/nar as
 *     they were
 * and after the run the server still answers known-good GETs with the exact stored bytes.
 *
 * Requests go through app.inject (no socket) for speed. inject parses the URL with WHATWG rules,
 * which resolve `..` and `%2e%2e`, so paths with dot segments or backslashes go over a
 * keep-alive loopback socket instead, byte for byte, as a hostile client would send them.
 *
 * Seed and run counts: test/fuzz/fuzz-settings.ts (FUZZ_SEED, FUZZ_SCALE).
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { existsSync, readdirSync, writeFileSync } from 'node:fs'
import http from 'node:http'
import path from 'node:path'
import fc from 'fast-check'
import { generateToken, hashToken } from '../../src/auth/tokens.js'
import { openCache } from '../../src/cache/open-cache.js'
import { loadConfig } from '../../src/config/config.js'
import { extensionFor, type Compression } from '../../src/nix/compression.js'
import { fingerprintNarInfo } from '../../src/nix/fingerprint.js'
import { formatNarInfo, type NarInfo } from '../../src/nix/narinfo.js'
import { encodeNix32 } from '../../src/nix/nix32.js'
import { STORE_DIR } from '../../src/nix/store-path.js'
import { buildApp } from '../../src/server/app.js'
import { generateKeyPair } from '../../src/signing/keys.js'
import { compressBytes } from '../helpers/upload.js'
import { makeTempDir } from '../unit/nix-test-helpers.js'
import {
  byteMutation, bytes, hashPart, lineMutation, mutateAll, mutateLines, narOf, narTree, nix32String, storePathName, type ByteMutation,
  type LineMutation
} from './arbitraries.js'
import { FUZZ_SEED, checkProperty } from './fuzz-settings.js'
import { sqliteDb } from '../helpers/sqlite.js'

const TIMEOUT = 5 * 60 * 1000
const NAR_LIMIT = 1024 * 1024

function sha256 (data: Uint8Array | string): Buffer {
  return createHash('sha256').update(data).digest()
}

function walk (dir: string): string[] {
  if (!existsSync(dir)) return []
  return readdirSync(dir, { withFileTypes: true }).flatMap(e => e.isDirectory() ? walk(path.join(dir, e.name)) : [path.join(dir, e.name)])
}

/** A NAR file ready to upload, with everything its narinfos need. */
interface PoolNar {
  nar: Buffer
  bytes: Buffer
  compression: Compression | 'lz4'
  fileHash: string
  url: string
  storePath: string
  hashPart: string
  references: string[]
  /** Signed by the trusted uploader key, unsigned, and signed by a key the cache does not trust. */
  narinfos: { signed: string, unsigned: string, stranger: string }
  /** The signed narinfo in each Content-Encoding narwhal decodes. */
  encodedNarinfos: Record<typeof NARINFO_ENCODINGS[number], Buffer>
}

const NARINFO_ENCODINGS = ['xz', 'zstd', 'br', 'gzip', 'bzip2'] as const

interface GeneratedRequest {
  method: string
  path: string
  headers: Record<string, string>
  body?: Buffer
  /** A read of the path stored before the run, which must always succeed whatever the headers. */
  knownGood?: boolean
}

interface Answer { status: number, body: string, bytes: Buffer }

test('generated requests never get a 5xx, and refused writes change nothing', { timeout: TIMEOUT }, async (t) => {
  // ---- The cache under test -------------------------------------------------------------------
  const { dir, cleanup } = makeTempDir()
  const configFile = path.join(dir, 'narwhal.json')
  // No free-space reserve, so the answers do not depend on this machine's disk; a small NAR
  // limit, so generated Content-Lengths can cross it.
  writeFileSync(configFile, JSON.stringify({ limits: { freeSpaceReserveBytes: 0, narBytes: NAR_LIMIT } }))
  const uploader = generateKeyPair('fuzz-uploader-1')
  const stranger = generateKeyPair('fuzz-stranger-1')
  const config = loadConfig({ configFile, dataDir: path.join(dir, 'data'), listen: '127.0.0.1:0', trustedKeys: [uploader.publicKeyText] }, {})
  const cache = await openCache(config)
  const app = buildApp({ config, metadata: cache.metadata, blobs: cache.blobs, trustedKeys: cache.trustedKeys, provenance: cache.provenance, audit: cache.audit, browse: cache.browse }, { logger: false })
  // The error behind a 5xx, for the failure message (the app's own logger is off).
  let lastError: unknown
  app.addHook('onError', async (_request, _reply, err) => { lastError = err })
  await app.listen({ host: '127.0.0.1', port: 0 })
  const address = app.server.address()
  if (address === null || typeof address === 'string') throw new Error('no TCP address')
  const port = address.port
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
  t.after(async () => {
    agent.destroy()
    await app.close()
    await cache.close()
    cleanup()
  })

  async function token (scope: 'read' | 'push' | 'admin', state: 'live' | 'revoked' | 'expired' = 'live'): Promise<string> {
    const value = generateToken()
    const id = (await cache.metadata.tokens.insert({ name: `fuzz-${scope}-${state}`, scope, tokenHash: hashToken(value), expiresAt: state === 'expired' ? Date.now() - 1000 : null }, Date.now()))
    if (state === 'revoked') await cache.metadata.tokens.revoke(id, Date.now())
    return value
  }
  const tokens = { push: await token('push'), read: await token('read'), admin: await token('admin'), revoked: await token('push', 'revoked'), expired: await token('push', 'expired') }

  // ---- Fixtures: NARs in every compression, with narinfos; some reference others ------------
  const METHODS: Array<Compression | 'lz4'> = ['xz', 'none', 'zstd', 'gzip', 'br', 'bzip2', 'lz4', 'xz']
  const trees = fc.sample(narTree, { seed: FUZZ_SEED, numRuns: METHODS.length })
  const names = fc.sample(fc.tuple(hashPart, storePathName), { seed: FUZZ_SEED + 1, numRuns: METHODS.length })
  const pool: PoolNar[] = []
  for (const [i, method] of METHODS.entries()) {
    const nar = narOf(trees[i] ?? { type: 'regular', contents: Buffer.from('x'), executable: false })
    const bytes = await compressBytes(nar, method)
    const fileHash = encodeNix32(sha256(bytes))
    const [hash = '', name = 'x'] = names[i] ?? []
    // Unique hash parts even if the sample repeats one.
    const uniqueHash = hash.slice(0, 30) + encodeNix32(Buffer.from([i])).padStart(2, '0').slice(-2)
    const storePath = `${STORE_DIR}/${uniqueHash}-${name}`
    const references = pool.filter((_, j) => j % 2 === i % 2).slice(-2).map(p => p.storePath.slice(STORE_DIR.length + 1))
    const info: NarInfo = {
      storePath,
      url: `nar/${fileHash}.nar${extensionFor(method)}`,
      compression: method,
      fileHash: sha256(bytes),
      fileSize: BigInt(bytes.length),
      narHash: sha256(nar),
      narSize: BigInt(nar.length),
      references,
      sigs: []
    }
    const fingerprint = fingerprintNarInfo(info)
    const signed = formatNarInfo({ ...info, sigs: [uploader.secretKey.sign(fingerprint)] })
    const encodedNarinfos = Object.fromEntries(await Promise.all(NARINFO_ENCODINGS.map(async e =>
      [e, await compressBytes(Buffer.from(signed), e)] as const))) as PoolNar['encodedNarinfos']
    pool.push({
      nar,
      bytes,
      compression: method,
      fileHash,
      url: info.url,
      storePath,
      hashPart: uniqueHash,
      references,
      encodedNarinfos,
      narinfos: {
        signed,
        unsigned: formatNarInfo(info),
        stranger: formatNarInfo({ ...info, sigs: [stranger.secretKey.sign(fingerprint)] })
      }
    })
  }

  // The known-good path: stored before the run, checked after it.
  const known = pool[0]
  assert.ok(known !== undefined)
  const knownNar = await app.inject({ method: 'PUT', url: `/${known.url}`, headers: { authorization: `Bearer ${tokens.push}` }, payload: known.bytes })
  assert.equal(knownNar.statusCode, 201, knownNar.body)
  const knownInfo = await app.inject({ method: 'PUT', url: `/${known.hashPart}.narinfo`, headers: { authorization: `Bearer ${tokens.push}` }, payload: known.narinfos.signed })
  assert.equal(knownInfo.statusCode, 201, knownInfo.body)
  assert.ok((await cache.metadata.narinfos.text(known.hashPart)) !== undefined)
  /** What the known narinfo must read as: it may gain signatures (a valid re-upload merges them). */
  const knownText = async (): Promise<string> => (await cache.metadata.narinfos.text(known.hashPart)) ?? '(gone)'

  // ---- Sending ------------------------------------------------------------------------------
  function sendRaw (request: GeneratedRequest): Promise<Answer> {
    return new Promise((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port, method: request.method, path: request.path, headers: request.headers, agent }, res => {
        const chunks: Buffer[] = []
        res.on('data', (c: Buffer) => chunks.push(c))
        res.on('end', () => {
          const bytes = Buffer.concat(chunks)
          resolve({ status: res.statusCode ?? 0, body: bytes.toString('utf8'), bytes })
        })
        res.on('error', reject)
      })
      req.on('error', reject)
      req.end(request.body)
    })
  }

  async function send (request: GeneratedRequest): Promise<Answer> {
    if (needsSocket(request.path)) {
      // Without a body: a server that refuses early closes the connection, and a client still
      // sending would see a reset instead of the answer. (Bodies are fuzzed through inject.)
      const { 'content-length': _length, expect: _expect, ...headers } = request.headers
      return await sendRaw({ method: request.method, path: percentEncodeUnsendable(request.path), headers })
    }
    const response = await app.inject({ method: request.method as 'GET', url: request.path, headers: request.headers, ...(request.body !== undefined ? { payload: request.body } : {}) })
    return { status: response.statusCode, body: response.body, bytes: response.rawPayload }
  }

  function count (table: string): number {
    return (sqliteDb(cache.metadata).prepare(`SELECT count(*) AS n FROM ${table}`).get() as { n: number }).n
  }

  function snapshot (): { rows: number[], narFiles: string[] } {
    return {
      rows: ['nar_files', 'narinfos', 'narinfo_refs', 'aux_files', 'tokens'].map(count),
      narFiles: walk(cache.layout.narDir).sort()
    }
  }

  /**
   * Whether the answer allows the cache to have changed. A batch is not atomic: its parts are
   * stored one by one, so when the multipart body breaks after a good part (400, malformed), that
   * part stays stored, as it would if the client had disconnected there.
   */
  function mayHaveWritten (request: GeneratedRequest, answer: Answer): boolean {
    if (request.method === 'GET' || request.method === 'HEAD') return false
    if (request.path.startsWith('/api/v1/upload-batch')) {
      if (answer.status === 400 && answer.body.includes('the multipart body is malformed')) return true
      if (answer.status >= 300) return false
      const results = (JSON.parse(answer.body) as { results: Array<{ status: number }> }).results
      return results.some(r => r.status < 300)
    }
    return answer.status < 300
  }

  /** The public cache answers reads of the stored path whatever the credentials; Range only on NARs. */
  async function assertServesKnown (request: GeneratedRequest, answer: Answer, shown: string): Promise<void> {
    const isNar = request.path.startsWith('/nar/')
    const whole = isNar ? known?.bytes : Buffer.from(await knownText())
    assert.ok([200, 206, 416].includes(answer.status) && (isNar || answer.status === 200), `known-good read failed: ${shown}`)
    if (request.method === 'HEAD') return
    if (answer.status === 200) assert.deepEqual(answer.bytes, whole, `known-good read changed: ${shown}`)
    if (answer.status === 206) assert.ok(whole?.includes(answer.bytes), `a range that is not part of the file: ${shown}`)
  }

  /** Every NAR file on disk has its row and every row its file: nothing half-stored. */
  function assertConsistent (shown: string): void {
    const rows = (sqliteDb(cache.metadata).prepare('SELECT file_hash AS h FROM nar_files').all() as Array<{ h: string }>).map(r => r.h).sort()
    const files = walk(cache.layout.narDir).map(f => path.basename(f)).sort()
    assert.deepEqual(files, rows, `store/nar and the nar_files rows disagree after ${shown}`)
  }

  // ---- Generators -----------------------------------------------------------------------------
  const poolItem = fc.constantFrom(...pool)

  const headerText = fc.string({ unit: 'binary-ascii', maxLength: 40 }).map(s => s.replace(/[\x00-\x08\x0a-\x1f\x7f]/g, '_')) // eslint-disable-line no-control-regex
  const basic = (userPass: string): string => `Basic ${Buffer.from(userPass).toString('base64')}`
  const authorization = fc.oneof(
    { weight: 8, arbitrary: fc.constant(`Bearer ${tokens.push}`) },
    {
      weight: 3,
      arbitrary: fc.constantFrom(undefined, `Bearer ${tokens.read}`, `Bearer ${tokens.admin}`, `Bearer ${tokens.revoked}`,
        `Bearer ${tokens.expired}`, 'Bearer ', 'Bearer', 'Bearer nw_x', basic(`nix:${tokens.push}`), basic('nix:'), basic(tokens.push),
        'Basic !!!', 'Basic', `bearer ${tokens.push}`, `BEARER  ${tokens.push}  `, `Token ${tokens.push}`, `Bearer ${tokens.push}x`)
    },
    { weight: 1, arbitrary: headerText.map(s => `Bearer ${s}`) },
    { weight: 1, arbitrary: headerText }
  )
  const contentType = fc.constantFrom(undefined, 'text/x-nix-narinfo', 'application/x-nix-nar', 'application/json', 'text/plain',
    'multipart/form-data', 'multipart/form-data; boundary=', 'multipart/form-data; boundary=zz', 'application/x-www-form-urlencoded',
    'application/octet-stream; charset=utf-16', '*/*', ';;;', 'multipart/mixed; boundary=zz')
  const contentEncoding = fc.constantFrom(undefined, undefined, undefined, 'identity', 'none', '', 'xz', 'zstd', 'br', 'gzip', 'bzip2',
    'lz4', 'deflate', 'gzip, br', 'x-garbage', 'XZ')
  const range = fc.oneof(
    fc.constantFrom(undefined, undefined, 'bytes=0-', 'bytes=0-0', 'bytes=-1', 'bytes=-0', 'bytes=5-2', 'bytes=1-1000000',
      'bytes=99999999999999999999-', 'bytes=-99999999999999999999', 'bytes=0-1,4-5', 'bytes=--', 'bytes=', 'items=0-1', 'bytes=1e3-',
      'bytes=0x10-', 'bytes= 1-2', 'bytes=18446744073709551616-'),
    fc.tuple(fc.nat({ max: 5000 }), fc.option(fc.nat({ max: 5000 }))).map(([a, b]) => `bytes=${a}-${b ?? ''}`)
  )
  const otherHeaders = fc.record({
    'content-type': contentType,
    'content-encoding': contentEncoding,
    range,
    expect: fc.constantFrom(undefined, undefined, undefined, '100-continue', 'nothing'),
    'content-length': fc.constantFrom(undefined, undefined, undefined, undefined, undefined, undefined, String(NAR_LIMIT + 1), '99999999999999999999', '-1', 'abc', '0')
  }, { requiredKeys: [] })

  const headers = fc.tuple(authorization, otherHeaders).map(([auth, rest]) => {
    const out: Record<string, string> = {}
    if (auth !== undefined) out.authorization = auth
    for (const [key, value] of Object.entries(rest)) if (value !== undefined) out[key] = value
    return out
  })

  const badHashPart = fc.oneof(
    hashPart.map(h => h.toUpperCase()),
    hashPart.map(h => h.slice(1)),
    hashPart.map(h => h + 'a'),
    fc.tuple(hashPart, fc.constantFrom('e', 'o', 'u', 't', '_', '.', '%', '-')).map(([h, c]) => c + h.slice(1)),
    fc.string({ unit: 'grapheme-ascii', minLength: 32, maxLength: 32 })
  )
  const anyHashPart = fc.oneof(hashPart, badHashPart, poolItem.map(p => p.hashPart))
  const fileHash = fc.oneof(nix32String(52), poolItem.map(p => p.fileHash), nix32String(51), nix32String(53), nix32String(52).map(h => h.toUpperCase()))
  const narExtension = fc.constantFrom('', '.xz', '.bz2', '.zst', '.lzip', '.lz4', '.br', '.gz', '.xz.sh', '.XZ', '.xz/', '.xz%00')
  const drv = fc.tuple(anyHashPart, storePathName).map(([h, n]) => `${h}-${n}.drv`)
  const hex = (n: number): fc.Arbitrary<string> => fc.string({ unit: fc.constantFrom(...'0123456789abcdef'), minLength: n, maxLength: n })

  const segment = fc.oneof(
    fc.constantFrom('..', '.', '%2e%2e', '%2E%2E', '.%2e', '%2f', '%2F', '%00', '%', '%zz', '%c0%af', '%ff', '', 'nar', 'log',
      'realisations', 'build-trace-v2', 'debuginfo', 'api', 'v1', 'missing-paths', 'upload-batch', 'nix-cache-info', 'healthz',
      'metrics', 'narwhal.sqlite', 'store', 'tmp', 'etc', 'passwd', '*', ':hash', '\\..\\..'),
    hashPart,
    nix32String(52),
    fc.string({ unit: 'grapheme-ascii', maxLength: 12 }).map(encodeURIComponent),
    fc.string({ unit: 'grapheme', maxLength: 6 }).map(encodeURIComponent),
    fc.string({ unit: 'grapheme-ascii', maxLength: 12 }).map(s => s.replace(/[?#/\s%]/g, '_'))
  )
  const suffix = fc.constantFrom('', '', '.narinfo', '.ls', '.nar', '.nar.xz', '.doi', '.drv', '?', '?x=1', '?narinfo-compression=xz', '#f', '/')

  const structuredPath = fc.oneof(
    anyHashPart.map(h => `/${h}.narinfo`),
    fc.tuple(fileHash, narExtension).map(([h, e]) => `/nar/${h}.nar${e}`),
    drv.map(d => `/log/${d}`),
    anyHashPart.map(h => `/${h}.ls`),
    fc.tuple(hex(64), fc.constantFrom('out', 'dev', '', 'a/b', '..', 'x'.repeat(212))).map(([h, o]) => `/realisations/sha256:${h}!${o}.doi`),
    fc.tuple(drv, fc.constantFrom('out.doi', 'out', '.doi', 'a/b.doi')).map(([d, o]) => `/build-trace-v2/${d}/${o}`),
    fc.oneof(hex(40), hex(39), hex(41), hex(40).map(h => h.toUpperCase())).map(h => `/debuginfo/${h}`),
    fc.constantFrom('/nix-cache-info', '/healthz', '/metrics', '/api/v1/missing-paths', '/api/v1/upload-batch', '/', '//nix-cache-info',
      '/nar/', '/log/', '/realisations/', '/build-trace-v2/', '/debuginfo/', '/api/v1/', '/.narinfo', '/nar/.nar', '*')
  )
  const randomPath = fc.tuple(fc.array(segment, { minLength: 1, maxLength: 5 }), suffix).map(([parts, s]) => '/' + parts.join('/') + s)
  const longPath = fc.tuple(fc.constantFrom('/', '/nar/', '/log/', '/realisations/', '/debuginfo/'), fc.integer({ min: 200, max: 70_000 }))
    .map(([prefix, n]) => prefix + 'a'.repeat(n))
  const urlPath = fc.oneof({ weight: 5, arbitrary: structuredPath }, { weight: 4, arbitrary: randomPath }, { weight: 1, arbitrary: longPath })

  const method = fc.oneof(
    { weight: 4, arbitrary: fc.constantFrom('GET', 'PUT') },
    { weight: 2, arbitrary: fc.constantFrom('HEAD', 'POST') },
    { weight: 1, arbitrary: fc.constantFrom('DELETE', 'PATCH', 'OPTIONS') }
  )

  const mutations = fc.oneof({ weight: 1, arbitrary: fc.constant<ByteMutation[]>([]) }, { weight: 3, arbitrary: fc.array(byteMutation, { minLength: 1, maxLength: 3 }) })
  const lineMutations = fc.oneof({ weight: 1, arbitrary: fc.constant<LineMutation[]>([]) }, { weight: 3, arbitrary: fc.array(lineMutation, { minLength: 1, maxLength: 3 }) })

  const narinfoText = fc.tuple(poolItem, fc.constantFrom<'signed' | 'unsigned' | 'stranger'>('signed', 'signed', 'unsigned', 'stranger'), lineMutations)
    .map(([p, which, m]) => ({ item: p, text: mutateLines(p.narinfos[which], m) }))

  const randomBody = fc.oneof({ weight: 3, arbitrary: bytes(0, 200) }, { weight: 1, arbitrary: bytes(200, 2000) }, { weight: 1, arbitrary: bytes(60_000, 70_000) })
  const jsonBody = fc.oneof(
    fc.array(fc.oneof(hashPart, badHashPart, poolItem.map(p => p.hashPart)), { maxLength: 20 }).map(hashParts => JSON.stringify({ hashParts })),
    fc.constantFrom('{}', '[]', 'null', '"x"', '{"hashParts":null}', '{"hashParts":[1,2]}', '{"hashParts":"abc"}', '{', '',
      JSON.stringify({ hashParts: Array.from({ length: 10_001 }, () => '0'.repeat(32)) })),
    fc.jsonValue({ maxDepth: 3 }).map(v => JSON.stringify(v))
  ).map(s => Buffer.from(s))

  /** A multipart/form-data body: parts named like protocol paths, in the pusher's format. */
  interface Part { name: string, filename: boolean, body: Buffer }
  function multipart (boundary: string, parts: Part[]): Buffer {
    const pieces: Buffer[] = []
    for (const part of parts) {
      pieces.push(Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="${part.name}"` +
        `${part.filename ? '; filename="part"' : ''}\r\nContent-Type: application/octet-stream\r\n\r\n`), part.body, Buffer.from('\r\n'))
    }
    pieces.push(Buffer.from(`--${boundary}--\r\n`))
    return Buffer.concat(pieces)
  }
  const part: fc.Arbitrary<Part> = fc.oneof(
    fc.tuple(poolItem, mutations, fc.boolean()).map(([p, m, filename]) => ({ name: p.url, filename, body: mutateAll(p.bytes, m) })),
    fc.tuple(narinfoText, fc.boolean()).map(([n, filename]) => ({ name: `${n.item.hashPart}.narinfo`, filename, body: Buffer.from(n.text) })),
    fc.tuple(fc.oneof(fc.constantFrom('', 'x', '../x', 'nar/', '.narinfo'), randomPath), randomBody, fc.boolean()).map(([name, body, filename]) => ({ name, filename, body }))
  )
  const batch = fc.tuple(fc.array(part, { maxLength: 4 }), fc.constantFrom('narwhal-fuzz-boundary', 'x', 'a'.repeat(70)), mutations)
    .map(([parts, boundary, m]) => ({ boundary, body: mutateAll(multipart(boundary, parts), m) }))

  /** Requests that reach the write rules: coherent enough to pass the first checks. */
  const narUpload = fc.tuple(poolItem, mutations, fc.boolean(), chunkless(headers)).map(([p, m, nameByOwnHash, h]): GeneratedRequest => {
    const body = mutateAll(p.bytes, m)
    // Named by its own hash, a mutated body reaches the decompressor and the NAR reader.
    const name = nameByOwnHash ? encodeNix32(sha256(body)) : p.fileHash
    return { method: 'PUT', path: `/nar/${name}.nar${extensionFor(p.compression)}`, headers: h, body }
  })
  const narinfoUpload = fc.oneof(
    fc.tuple(narinfoText, chunkless(headers)).map(([n, h]): GeneratedRequest => ({
      method: 'PUT', path: `/${n.item.hashPart}.narinfo`, headers: h, body: Buffer.from(n.text)
    })),
    // Compressed as Nix 2.32+ sends it (?narinfo-compression=…), then damaged, so the decoders
    // see broken streams too.
    fc.tuple(poolItem, fc.constantFrom(...NARINFO_ENCODINGS), mutations, chunkless(headers)).map(([p, encoding, m, h]): GeneratedRequest => ({
      method: 'PUT',
      path: `/${p.hashPart}.narinfo`,
      headers: { ...h, 'content-encoding': encoding },
      body: mutateAll(p.encodedNarinfos[encoding], m)
    }))
  )
  const batchUpload = fc.tuple(batch, chunkless(headers), fc.boolean()).map(([b, h, rightType]): GeneratedRequest => ({
    method: 'POST',
    path: '/api/v1/upload-batch',
    headers: rightType ? { ...h, 'content-type': `multipart/form-data; boundary=${b.boundary}` } : h,
    body: b.body
  }))
  const missingPaths = fc.tuple(jsonBody, chunkless(headers)).map(([body, h]): GeneratedRequest => ({
    method: 'POST', path: '/api/v1/missing-paths', headers: h, body
  }))
  const auxUpload = fc.tuple(structuredPath, fc.oneof(jsonBody, randomBody), chunkless(headers)).map(([p, body, h]): GeneratedRequest => ({
    method: 'PUT', path: p, headers: h, body
  }))
  const anyRequest = fc.tuple(method, urlPath, headers, fc.option(fc.oneof(randomBody, jsonBody, poolItem.map(p => p.bytes), narinfoText.map(n => Buffer.from(n.text))), { nil: undefined }))
    .map(([m, p, h, body]): GeneratedRequest => ({ method: m, path: p, headers: h, body }))
  const readKnown = fc.tuple(fc.constantFrom('GET', 'HEAD'), fc.constantFrom(`/${known.url}`, `/${known.hashPart}.narinfo`), headers)
    .map(([m, p, h]): GeneratedRequest => ({ method: m, path: p, headers: h, knownGood: true }))

  const request: fc.Arbitrary<GeneratedRequest> = fc.oneof(
    { weight: 3, arbitrary: narUpload },
    { weight: 3, arbitrary: narinfoUpload },
    { weight: 2, arbitrary: batchUpload },
    { weight: 1, arbitrary: missingPaths },
    { weight: 2, arbitrary: auxUpload },
    { weight: 6, arbitrary: anyRequest },
    { weight: 1, arbitrary: readKnown }
  )

  let created = 0
  await checkProperty(t, fc.asyncProperty(request, async generated => {
    const before = snapshot()
    lastError = undefined
    const answer = await send(generated)
    const shown = `${generated.method} ${generated.path.slice(0, 300)}${needsSocket(generated.path) ? ' (socket)' : ''} ${JSON.stringify(generated.headers)} -> ${answer.status} ${answer.body.slice(0, 300)}`
    assert.ok(answer.status >= 200 && answer.status < 500,
      `5xx (or no status) for ${shown}\nserver error: ${(lastError as Error | undefined)?.stack ?? String(lastError)}`)
    assert.deepEqual(readdirSync(cache.layout.tmpDir), [], `store/tmp not empty after ${shown}`)
    assertConsistent(shown)
    if (generated.knownGood === true) await assertServesKnown(generated, answer, shown)
    if (mayHaveWritten(generated, answer)) {
      created++
    } else {
      assert.deepEqual(snapshot(), before, `a refused write or a read changed the cache: ${shown}`)
    }
  }), 4000, { timeout: 30_000 })
  t.diagnostic(`${created} requests were accepted writes; ${(await cache.metadata.narinfos.count())} narinfos stored`)

  // ---- Afterwards: the server still serves what it stored, byte for byte ---------------------
  const narinfo = await app.inject({ method: 'GET', url: `/${known.hashPart}.narinfo` })
  assert.equal(narinfo.statusCode, 200)
  assert.equal(narinfo.body, await knownText())
  assert.ok(narinfo.body.startsWith(known.narinfos.signed.split('\nSig: ')[0] ?? '(none)'), 'the known narinfo kept its content')
  const narFile = await app.inject({ method: 'GET', url: `/${known.url}` })
  assert.equal(narFile.statusCode, 200)
  assert.deepEqual(narFile.rawPayload, known.bytes)
  const overSocket = await sendRaw({ method: 'GET', path: '/nix-cache-info', headers: {} })
  assert.equal(overSocket.status, 200)
  assert.match(overSocket.body, /^StoreDir: \/nix\/store\n/)
})

/** Headers for a request that carries its own body: a generated Content-Length would lie about it. */
function chunkless (headers: fc.Arbitrary<Record<string, string>>): fc.Arbitrary<Record<string, string>> {
  return headers.map(h => {
    const { 'content-length': _length, ...rest } = h
    return rest
  })
}

/**
 * Paths that inject cannot send as they are: WHATWG URL parsing resolves dot segments (`..`,
 * `%2e%2e`) and turns `\` into `/`, where a hostile client sends them byte for byte.
 */
function needsSocket (target: string): boolean {
  return /(^|\/)(\.|%2e){1,2}(\/|$|\?|#)|\\/i.test(target)
}

/** What an HTTP client must percent-encode in a request target: spaces, controls, non-ASCII. */
function percentEncodeUnsendable (target: string): string {
  return target.replace(/[^\x21-\x7e]/gu, c => [...Buffer.from(c, 'utf8')].map(b => `%${b.toString(16).padStart(2, '0').toUpperCase()}`).join(''))
}
