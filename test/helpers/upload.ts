/**
 * Hand-built uploads for the server tests (test/server): the requests the real Nix client would
 * never send, made from real data.
 *
 *   addStorePath()   a fresh store path (`nix-store --add` of a temp dir with random content)
 *   makeNar()        its NAR (`nix-store --dump`), compressed with narwhal's own codecs (or the
 *                    system lz4), with FileHash/FileSize/NarHash/NarSize as `nix copy` computes them
 *   makeNarinfo()    the narinfo `nix copy` would PUT for it, signed over the fingerprint
 *   put()/request()  fetch for ordinary requests; node:http for raw paths that fetch would normalise
 *   rawHttp()        a bare socket, for what even node:http hides (a body after a HEAD answer)
 *   rowCounts()      what the metadata store holds, for "a refused write stores nothing"
 */
import { execFile } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { mkdirSync, rmSync, writeFileSync } from 'node:fs'
import http from 'node:http'
import net from 'node:net'
import path from 'node:path'
import { Readable, Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import type { Compression } from '../../src/nix/compression.js'
import { narUrl } from '../../src/nix/nar-url.js'
import { formatNarInfo, parseNarInfo, type NarInfo } from '../../src/nix/narinfo.js'
import type { PathInfo } from '../../src/pusher/closure.js'
import { buildNarinfo } from '../../src/pusher/signer.js'
import { encodeNix32 } from '../../src/nix/nix32.js'
import type { SecretKey } from '../../src/signing/keys.js'
import { createCompressor } from '../../src/nix/codecs.js'
import { tempDir } from './nix.js'
import type { TestServer } from './server.js'

/** Runs a command and returns its stdout as bytes (a NAR is binary). */
export function runBytes (file: string, args: string[], input?: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const child = execFile(file, args, { encoding: 'buffer', maxBuffer: 1024 ** 3 }, (err, stdout, stderr) => {
      if (err !== null) reject(new Error(`${file} ${args.join(' ')} failed: ${err.message}\n${stderr.toString()}`))
      else resolve(stdout)
    })
    if (input !== undefined) child.stdin?.end(input)
  })
}

export interface StorePathOptions {
  /** Size of the random file in the path; the default keeps NARs small and fast. */
  randomBytes?: number
  name?: string
}

/** A fresh store path, unique per call, added with `nix-store --add`. Returns the full path. */
export async function addStorePath (options: StorePathOptions = {}): Promise<string> {
  const nonce = randomBytes(6).toString('hex')
  const parent = tempDir('narwhal-path-')
  const dir = path.join(parent, `${options.name ?? 'narwhal-server-test'}-${nonce}`)
  mkdirSync(path.join(dir, 'sub'), { recursive: true })
  writeFileSync(path.join(dir, 'random.bin'), randomBytes(options.randomBytes ?? 4096))
  writeFileSync(path.join(dir, 'sub', 'text.txt'), `narwhal server test ${nonce}\n`.repeat(200))
  try {
    return (await runBytes('nix-store', ['--add', dir])).toString('utf8').trim()
  } finally {
    rmSync(parent, { recursive: true, force: true })
  }
}

export function sha256 (data: Uint8Array): Buffer {
  return createHash('sha256').update(data).digest()
}

/** nix32 of the SHA-256 of `data`: the name a NAR file gets (`nar/<this>.nar.xz`). */
export function fileHashOf (data: Uint8Array): string {
  return encodeNix32(sha256(data))
}

export async function collect (source: AsyncIterable<Buffer> | Readable): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const chunk of source) chunks.push(chunk as Buffer)
  return Buffer.concat(chunks)
}

/** Compresses with narwhal's own codecs; lz4 (which narwhal cannot verify) with the system tool. */
export async function compressBytes (data: Buffer, method: Compression | 'lz4'): Promise<Buffer> {
  if (method === 'lz4') return await runBytes('lz4', ['-c', '-q'], data)
  if (method === 'bzip2') return await runBytes('bzip2', ['-c'], data)
  const chunks: Buffer[] = []
  await pipeline(Readable.from([data]), createCompressor(method), new Writable({
    write (chunk: Buffer, _enc, done) { chunks.push(chunk); done() }
  }))
  return Buffer.concat(chunks)
}

export interface Nar {
  storePath: string
  /** `<hash>-<name>`, as References and Deriver write it. */
  baseName: string
  hashPart: string
  /** The uncompressed NAR. */
  nar: Buffer
  /** The file as uploaded. */
  bytes: Buffer
  compression: Compression | 'lz4'
  fileHash: string
  /** `nar/<fileHash>.nar<ext>`, relative to the cache root, as the narinfo URL field says. */
  url: string
  narHash: Buffer
  narSize: bigint
}

export async function makeNar (storePath: string, compression: Compression | 'lz4' = 'xz'): Promise<Nar> {
  return await narFromBytes(storePath, await runBytes('nix-store', ['--dump', storePath]), compression)
}

/** The upload of a NAR given as bytes (from `nix-store --dump` or built by a test). */
export async function narFromBytes (storePath: string, nar: Buffer, compression: Compression | 'lz4'): Promise<Nar> {
  const bytes = await compressBytes(nar, compression)
  const fileHash = fileHashOf(bytes)
  const baseName = path.basename(storePath)
  return {
    storePath,
    baseName,
    hashPart: baseName.slice(0, 32),
    nar,
    bytes,
    compression,
    fileHash,
    url: narUrl(fileHash, compression),
    narHash: sha256(nar),
    narSize: BigInt(nar.length)
  }
}

/** A fresh store path's NAR in one call. */
export async function freshNar (compression: Compression | 'lz4' = 'xz', options: StorePathOptions = {}): Promise<Nar> {
  return await makeNar(await addStorePath(options), compression)
}

export interface NarinfoOptions {
  /** Base names. */
  references?: string[]
  /** Each key signs the fingerprint, as `nix copy --to '…?secret-key=FILE'` does. */
  keys?: SecretKey[]
  deriver?: string
  /** Fields to override after signing (a tampered narinfo keeps its Sig). */
  tamper?: Partial<NarInfo>
}

/** The NarInfo an uploader writes for `nar`: the pusher's own (buildNarinfo), as `nix copy` writes it. */
export function narinfoFor (nar: Nar, options: NarinfoOptions = {}): NarInfo {
  const info: PathInfo = { path: nar.storePath, narHash: nar.narHash, narSize: Number(nar.narSize), references: options.references ?? [], sigs: [] }
  if (options.deriver !== undefined) info.deriver = options.deriver
  const text = buildNarinfo(info, { url: nar.url, compression: nar.compression, fileHash: nar.fileHash, fileSize: nar.bytes.length }, options.keys ?? [])
  return { ...parseNarInfo(text), ...options.tamper }
}

export function makeNarinfo (nar: Nar, options: NarinfoOptions = {}): string {
  return formatNarInfo(narinfoFor(nar, options))
}

export interface Answer {
  status: number
  headers: http.IncomingHttpHeaders
  body: string
  bytes: Buffer
}

async function answerOf (response: Response): Promise<Answer> {
  const bytes = Buffer.from(await response.arrayBuffer())
  const headers: http.IncomingHttpHeaders = {}
  response.headers.forEach((value, key) => { headers[key] = value })
  return { status: response.status, headers, body: bytes.toString('utf8'), bytes }
}

export function authHeader (token: string | undefined): Record<string, string> {
  return token === undefined ? {} : { authorization: `Bearer ${token}` }
}

/** A PUT with fetch; `url` is absolute. */
export async function put (url: string, body: Uint8Array | string, token?: string, headers: Record<string, string> = {}): Promise<Answer> {
  return await answerOf(await fetch(url, { method: 'PUT', body, headers: { ...authHeader(token), ...headers } }))
}

export async function get (url: string, token?: string, headers: Record<string, string> = {}): Promise<Answer> {
  return await answerOf(await fetch(url, { headers: { ...authHeader(token), ...headers } }))
}

/** Uploads a NAR and its narinfo, as `nix copy` does, and asserts nothing; returns both answers. */
export async function upload (server: TestServer, nar: Nar, narinfo: string, token: string): Promise<{ nar: Answer, narinfo: Answer }> {
  const narAnswer = await put(`${server.url}/${nar.url}`, nar.bytes, token)
  const narinfoAnswer = await put(`${server.url}/${nar.hashPart}.narinfo`, narinfo, token, { 'content-type': 'text/x-nix-narinfo' })
  return { nar: narAnswer, narinfo: narinfoAnswer }
}

/**
 * A request through node:http, which sends `rawPath` exactly as given (fetch would resolve `..`
 * and `%2e%2e` before sending). A fresh connection per request.
 */
export function request (server: TestServer, method: string, rawPath: string,
  options: { headers?: Record<string, string | number>, body?: Uint8Array | string } = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: server.port, method, path: rawPath, headers: options.headers, agent: false }, res => {
      collect(res).then(bytes => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: bytes.toString('utf8'), bytes }), reject)
    })
    req.on('error', reject)
    req.end(options.body)
  })
}

/** Sends `text` on a bare socket and returns everything the server sends until it closes. */
export function rawHttp (port: number, text: string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', () => socket.write(text))
    const chunks: Buffer[] = []
    socket.on('data', (chunk: Buffer) => chunks.push(chunk))
    socket.on('end', () => resolve(Buffer.concat(chunks)))
    socket.on('error', reject)
    socket.setTimeout(10_000, () => socket.destroy(new Error('rawHttp: no answer within 10 s')))
  })
}

/** Splits a raw HTTP/1.1 answer into its status line, headers and whatever came after them. */
export function parseRaw (raw: Buffer): { status: number, head: string, rest: Buffer } {
  const end = raw.indexOf('\r\n\r\n')
  if (end < 0) throw new Error(`not an HTTP answer: ${JSON.stringify(raw.toString('latin1').slice(0, 200))}`)
  const head = raw.subarray(0, end).toString('latin1')
  return { status: Number(head.split(' ')[1]), head, rest: raw.subarray(end + 4) }
}

export interface RowCounts { narFiles: number, narinfos: number, refs: number, auxFiles: number }

/**
 * What the server's metadata store holds (NAR files in any state, narinfos, their references,
 * aux files), read through its MetadataStore: the same on every backend.
 */
export async function rowCounts (server: TestServer): Promise<RowCounts> {
  const metadata = server.cache.metadata
  let refs = 0
  let narinfos = 0
  for (let afterId = 0; ;) {
    const page = await metadata.narinfos.page(afterId, 1000)
    if (page.length === 0) break
    narinfos += page.length
    refs += page.reduce((sum, n) => sum + n.references.length, 0)
    afterId = page[page.length - 1]?.id ?? afterId
  }
  let auxFiles = 0
  for (let afterId = 0; ;) {
    const page = await metadata.aux.page(afterId, 1000)
    if (page.length === 0) break
    auxFiles += page.length
    afterId = page[page.length - 1]?.id ?? afterId
  }
  return { narFiles: (await metadata.narFiles.totals()).files, narinfos, refs, auxFiles }
}

/** A body that names the rule: `NARWHAL_CODE: message\n`. */
export function ruleOf (answer: Answer): string {
  return /^(NARWHAL_[A-Z_]+): /.exec(answer.body)?.[1] ?? `(no rule in ${JSON.stringify(answer.body.slice(0, 200))})`
}

export function sleep (ms: number): Promise<void> {
  return new Promise(resolve => setTimeout(resolve, ms))
}

/** Polls `check` until it returns true or `ms` pass; returns its last result. */
export async function eventually (check: () => boolean | Promise<boolean>, ms = 5000): Promise<boolean> {
  const deadline = Date.now() + ms
  for (;;) {
    if (await check()) return true
    if (Date.now() > deadline) return false
    await sleep(25)
  }
}
