/**
 * Produces the compressed NAR file of one store path, in one streaming pass and constant memory:
 *
 *   NAR of PATH (nar-writer.ts, or nix-store --dump) ──▶ sha256 + count (NarHash/NarSize) ──▶ compressor (zstd|xz)
 *                               ──▶ sha256 + count (FileHash/FileSize) ──▶ temp file
 *
 * The file hash is the NAR's URL name, so the file must be complete before its upload starts;
 * the caller streams the temp file as the request body and removes it afterwards.
 *
 * Uncompressed (`none`), the file is the NAR: its bytes are hashed once, and that hash is both
 * FileHash and NarHash. Its name is then the store's recorded NarHash, known before a byte is
 * read, so a large one is not made into a file at all: StoreNarBody streams it from the store
 * as the upload's body.
 *
 * zstd from the in-process writer (the default) runs as a synchronous loop over one buffer:
 * read, hash, compress (libzstd, on this thread), hash and keep what comes out, letting the event
 * loop turn every few MiB so uploads in flight keep moving. xz and `nix-store --dump` go through
 * Node streams.
 */
import { spawn } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { closeSync, createWriteStream, openSync, writeSync } from 'node:fs'
import { rm } from 'node:fs/promises'
import path from 'node:path'
import { Readable, Transform, type TransformCallback } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { narUrl } from '../nix/nar-url.js'
import { encodeNix32 } from '../nix/nix32.js'
import { CompressStream } from 'zstd-napi'
import zstd from 'zstd-napi/binding.js'
import { setImmediate as turn } from 'node:timers/promises'
import { createCompressor } from '../nix/codecs.js'
import type { PushCompression } from './config.js'
import { NixCommandError } from './closure.js'
import { dumpPath, narChunks } from './nar-writer.js'

export interface NarFile {
  /** Temp file holding the compressed bytes, or undefined when they are in `chunks`. */
  file?: string
  chunks?: Buffer[]
  compression: PushCompression
  /** nix32 SHA-256 of the compressed bytes: the URL name. */
  fileHash: string
  fileSize: number
  narHash: Buffer
  narSize: number
  /** `nar/<fileHash>.nar.zst` */
  url: string
}

function hashing (hash: ReturnType<typeof createHash>, counter: { bytes: number }): Transform {
  return new Transform({
    highWaterMark: 1 << 20,
    transform (chunk: Buffer, _enc, done: TransformCallback) {
      hash.update(chunk)
      counter.bytes += chunk.length
      done(null, chunk)
    }
  })
}

export type NarSource = 'in-process' | 'nix-store'

/**
 * libzstd's worker threads per NAR: none. Its multi-threaded mode cost 15% more pusher CPU for
 * the same bytes and did not push faster on two cores, where the server verifies the previous
 * NAR on the other core (BENCHMARKS.md, push, 2026-12-07 23:54).
 */
const ZSTD_WORKERS = 0

/**
 * zstd on the calling thread (ZSTD_WORKERS), as the in-process loop does, so both sources give
 * the same compressed bytes for the same NAR.
 */
function compressor (compression: Exclude<PushCompression, 'none'>, level?: number): Transform {
  if (compression === 'zstd') return new CompressStream({ compressionLevel: level ?? 3, nbWorkers: ZSTD_WORKERS })
  return createCompressor(compression, level)
}

/**
 * `source`: 'in-process' serialises the path here (nar-writer.ts, no process start-up);
 * 'nix-store' runs `nix-store --dump`, the reference, used when the other fails or disagrees.
 */
export async function dumpCompressed (storePath: string, tmpDir: string, compression: PushCompression,
  level?: number, source: NarSource = 'in-process', memoryBytes = 0): Promise<NarFile> {
  const file = path.join(tmpDir, `nar-${process.pid}-${randomBytes(8).toString('hex')}.tmp`)
  const narHash = createHash('sha256')
  const narCount = { bytes: 0 }
  const fileHash = createHash('sha256')
  const fileCount = { bytes: 0 }
  const finish = (chunks?: Buffer[]): NarFile => {
    const narDigest = narHash.digest()
    const hash = encodeNix32(compression === 'none' ? narDigest : fileHash.digest())
    return {
      ...(chunks === undefined ? { file } : { chunks }),
      compression,
      fileHash: hash,
      fileSize: compression === 'none' ? narCount.bytes : fileCount.bytes,
      narHash: narDigest,
      narSize: narCount.bytes,
      url: narUrl(hash, compression)
    }
  }
  // Uncompressed, the NAR is hashed once: its hash is the file's too.
  const stages = (): NodeJS.ReadWriteStream[] => compression === 'none'
    ? [hashing(narHash, narCount)]
    : [hashing(narHash, narCount), compressor(compression, level), hashing(fileHash, fileCount)]
  if (source === 'in-process' && compression === 'none') {
    return await removedOnFailure(file, async () => finish(keepUncompressed(storePath, new Output(file, memoryBytes), narHash, narCount)))
  }
  if (source === 'in-process' && compression === 'zstd') {
    return await removedOnFailure(file, async () =>
      finish(await zstdInProcess(storePath, new Output(file, memoryBytes), level ?? 3, narHash, narCount, fileHash, fileCount)))
  }
  if (source === 'in-process') {
    return await removedOnFailure(file, async () => {
      await pipeline([Readable.from(dumpPath(storePath)), ...stages(), createWriteStream(file, { flags: 'wx', mode: 0o600 })])
      return finish()
    })
  }
  const child = spawn('nix-store', ['--dump', storePath], { stdio: ['ignore', 'pipe', 'pipe'] })
  let stderr = ''
  child.stderr.setEncoding('utf8').on('data', (s: string) => { if (stderr.length < 4096) stderr += s })
  const exited = new Promise<number | null>((resolve, reject) => {
    child.once('error', reject)
    child.once('close', code => resolve(code))
  })
  try {
    await pipeline([child.stdout, ...stages(), createWriteStream(file, { flags: 'wx', mode: 0o600 })])
    const code = await exited
    if (code !== 0) {
      throw new NixCommandError(`nix-store --dump ${storePath} failed: ${stderr.trim().split('\n')[0] ?? `exit ${code}`}`, stderr)
    }
  } catch (err) {
    child.kill()
    await rm(file, { force: true })
    throw err
  }
  return finish()
}

/** `make`'s result; when it fails, the temp file it was writing is removed first. */
async function removedOnFailure<T> (file: string, make: () => Promise<T>): Promise<T> {
  try {
    return await make()
  } catch (err) {
    await rm(file, { force: true })
    throw err
  }
}

/** The NAR kept as it is (uncompressed), hashed once on its way into `output`; its chunks when kept in memory. */
function keepUncompressed (storePath: string, output: Output, narHash: ReturnType<typeof createHash>, narCount: { bytes: number }): Buffer[] | undefined {
  try {
    for (const chunk of narChunks(storePath)) {
      narHash.update(chunk)
      narCount.bytes += chunk.length
      output.put(chunk)
    }
  } catch (err) {
    output.close()
    throw err
  }
  return output.close()
}

/** The event loop turns after this many NAR bytes. */
const TURN_BYTES = 4 << 20

/** Room zstd is given to write into at least, and the largest slab of compressed bytes kept in memory. */
const MIN_ROOM = 64 << 10
const MAX_SLAB = 4 << 20

/**
 * Compressed bytes kept in memory up to `limit`, then in `file` (the NAR's upload reads them
 * back). On this shared machine, writing a 50 MB temp file while the server synced its own
 * files tripled a large NAR's compression time (BENCHMARKS.md, push, 2026-12-07).
 *
 * zstd writes straight into the memory that is kept (`room()`, then `took(n)`): slabs of 64 KiB
 * growing to 4 MiB, so a NAR's compressed bytes are neither copied nor held in a thousand small
 * buffers (a copy per chunk made the garbage collector run for the external memory).
 */
class Output {
  private chunks: Buffer[] | undefined = []
  private held = 0
  private fd: number | undefined
  private slab = Buffer.allocUnsafeSlow(MIN_ROOM)
  private used = 0
  /** Index in `chunks` of the first chunk that lives in the current slab. */
  private slabFirst = 0

  constructor (private readonly file: string, private readonly limit: number) {}

  /** Where zstd writes next (at least MIN_ROOM bytes). */
  room (): Buffer {
    if (this.slab.length - this.used < MIN_ROOM) {
      // In the file, the one slab is reused; in memory, a new, larger one.
      const size = this.fd !== undefined ? this.slab.length : Math.min(MAX_SLAB, this.slab.length * 2)
      this.slab = Buffer.allocUnsafeSlow(size)
      this.used = 0
      this.slabFirst = this.chunks?.length ?? 0
    }
    return this.slab.subarray(this.used)
  }

  /** The first `n` bytes of the last room() are compressed output. */
  took (n: number): Buffer {
    const bytes = this.slab.subarray(this.used, this.used + n)
    if (this.chunks !== undefined && this.held + n <= this.limit) {
      this.chunks.push(bytes)
      this.held += n
      this.used += n
      return bytes
    }
    if (this.fd === undefined) {
      this.fd = openSync(this.file, 'wx', 0o600)
      for (const c of this.chunks ?? []) this.writeAll(c)
      this.chunks = undefined
    }
    this.writeAll(bytes)
    // The slab's bytes are on disk: it is written over from the start.
    this.used = 0
    return bytes
  }

  /** Keeps a copy of `bytes` (a NAR kept uncompressed). */
  put (bytes: Buffer): void {
    for (let off = 0; off < bytes.length;) {
      const n = bytes.copy(this.room(), 0, off)
      this.took(n)
      off += n
    }
  }

  private writeAll (bytes: Buffer): void {
    for (let off = 0; off < bytes.length;) off += writeSync(this.fd as number, bytes, off)
  }

  /** The chunks, or undefined when they went to the file. */
  close (): Buffer[] | undefined {
    if (this.fd !== undefined) closeSync(this.fd)
    const chunks = this.chunks
    // A small NAR does not keep a mostly empty slab alive until its upload.
    if (chunks !== undefined && this.used < this.slab.length / 2) {
      const tail = chunks.splice(this.slabFirst)
      if (tail.length > 0) chunks.push(Buffer.concat(tail))
    }
    return chunks
  }
}

async function zstdInProcess (storePath: string, output: Output, level: number, narHash: ReturnType<typeof createHash>,
  narCount: { bytes: number }, fileHash: ReturnType<typeof createHash>, fileCount: { bytes: number }): Promise<Buffer[] | undefined> {
  const cctx = new zstd.CCtx()
  cctx.setParameter(zstd.CParameter.compressionLevel, level)
  cctx.setParameter(zstd.CParameter.nbWorkers, ZSTD_WORKERS)
  let chunks: Buffer[] | undefined
  try {
    const compress = (input: Buffer, end: zstd.EndDirective): void => {
      for (;;) {
        const [remaining, produced, consumed] = cctx.compressStream2(output.room(), input, end)
        if (produced > 0) {
          fileHash.update(output.took(produced))
          fileCount.bytes += produced
        }
        input = input.subarray(consumed)
        if (input.length === 0 && (end === zstd.EndDirective.continue || remaining === 0)) return
      }
    }
    let sinceTurn = 0
    for (const chunk of narChunks(storePath)) {
      narHash.update(chunk)
      narCount.bytes += chunk.length
      compress(chunk, zstd.EndDirective.continue)
      sinceTurn += chunk.length
      if (sinceTurn >= TURN_BYTES) {
        sinceTurn = 0
        await turn()
      }
    }
    compress(Buffer.alloc(0), zstd.EndDirective.end)
  } finally {
    chunks = output.close()
  }
  return chunks
}

/**
 * A store path's NAR as an upload's body, uncompressed, read as it is sent: the URL name is the
 * store's recorded NarHash, so nothing waits for the whole NAR, and nothing is held in memory or
 * written to a temp file. Each byte is hashed once on its way; the last chunk is held back until
 * the hash and size match the record, so a NAR that differs never reaches the server whole (the
 * server, hashing it against its name, would refuse it anyway). Each call of chunks() reads the
 * path again (a retried upload).
 */
export class StoreNarBody {
  /** The NarFile the upload makes, as the narinfo names it. */
  readonly nar: NarFile
  /** Why the last chunks() stopped, when it was the store's side (the writer, or a NAR unlike the record). */
  fault: Error | undefined

  constructor (private readonly storePath: string, narHash: Buffer, narSize: number) {
    const fileHash = encodeNix32(narHash)
    this.nar = { compression: 'none', fileHash, fileSize: narSize, narHash, narSize, url: narUrl(fileHash, 'none') }
  }

  async * chunks (): AsyncGenerator<Buffer> {
    this.fault = undefined
    const hash = createHash('sha256')
    let bytes = 0
    let held: Buffer | undefined
    try {
      // Chunks of their own: the socket may still hold one when the next is read.
      for (const chunk of narChunks(this.storePath, true)) {
        hash.update(chunk)
        bytes += chunk.length
        if (bytes > this.nar.narSize) throw new Error(`${this.storePath}: its NAR is longer than the recorded ${this.nar.narSize} bytes`)
        if (held !== undefined) yield held
        held = chunk
      }
      if (bytes !== this.nar.narSize || !hash.digest().equals(this.nar.narHash)) {
        throw new Error(`${this.storePath}: its NAR (${bytes} bytes) does not match the recorded NarHash/NarSize`)
      }
      if (held !== undefined) yield held
    } catch (err) {
      this.fault = err as Error
      throw err
    }
  }
}
