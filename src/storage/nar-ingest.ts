/**
 * Receives a NAR file and proves it is what its name says before it becomes visible.
 *
 * One pass over the body, in constant memory, chunk by chunk as it arrives:
 *
 *   body ──▶ byte count (limit) + sha256 (FileHash/FileSize) ──▶ PendingBlob (storage/blob-store.ts)
 *                 └──▶ decoder (method detected from the bytes) ──▶ NAR reader + sha256
 *
 * The bytes must hash to the name in the URL, decompress with the detected method, and form a
 * complete, well-formed NAR whose hash and size are returned for the metadata row. Only then is
 * the blob finished (durable, still invisible) and handed back: the caller commits it under its
 * name and records its row (cache/store-nar.ts). On any failure it is discarded.
 *
 * An uncompressed body (`none`) is its NAR: its bytes are hashed once, and that hash is both
 * FileHash and NarHash.
 *
 * For zstd and uncompressed bodies everything after the socket read is synchronous per chunk
 * (see createDecoder in nix/codecs.ts): no stream or async generator between the stages. Together
 * with the folder's batched writes (storage/temp-file.ts) this halved the CPU of a zstd upload (bench/ingest-cpu.ts).
 */
import { createHash } from 'node:crypto'
import { NarwhalError, isNarwhalError } from '../errors.js'
import { detectCompression, DETECTION_BYTES, VERIFIABLE_COMPRESSIONS, type Compression } from '../nix/compression.js'
import { encodeNix32 } from '../nix/nix32.js'
import { NarReader } from '../nix/nar-reader.js'
import type { BlobStore, PendingBlob } from './blob-store.js'
import { createDecoder, DecodeError, type Decoder } from '../nix/codecs.js'

export interface IngestedNar {
  fileHash: string
  fileSize: number
  compression: Compression
  narHash: string
  narSize: number
}

/** A NAR proven to be what its name says, its bytes durable in a finished blob, not yet visible. */
export interface VerifiedNar {
  nar: IngestedNar
  /** Finished; the caller commits it (blob.commit(nar)) and discards it in any case. */
  blob: PendingBlob
}

export interface IngestOptions {
  /** Refuse bodies longer than this many bytes (compressed). */
  maxBytes: number
  /** Refuse NARs that decompress to more than this many bytes (limits.narSizeBytes). */
  maxNarSize: number
  /** The body's declared length (Content-Length), or 0 when unknown. */
  declaredBytes: number
  /** Free space the upload must leave on the disk (limits.freeSpaceReserveBytes). */
  reserveBytes: number
  /**
   * Called once the bytes are proven to be what their name says, before the blob is finished;
   * throwing refuses the NAR like any other check. A pulled NAR's waiting clients get their last
   * bytes here, without waiting for the disk (upstream/nar-fetch.ts).
   */
  onVerified?: (nar: IngestedNar) => void
}

function tooLarge (maxBytes: number): NarwhalError {
  return new NarwhalError('NARWHAL_TOO_LARGE', `NAR file is larger than the limit of ${maxBytes} bytes (limits.narBytes)`)
}

function narTooLarge (maxNarSize: number): NarwhalError {
  return new NarwhalError('NARWHAL_TOO_LARGE', `NAR file decompresses to more than the limit of ${maxNarSize} bytes (limits.narSizeBytes)`)
}

/** The method to verify the body with, from its first DETECTION_BYTES; refuses what cannot be verified. */
export function chooseMethod (head: Buffer): Compression {
  const detected = detectCompression(head)
  if (detected === 'lz4' || detected === 'lzip') {
    throw new NarwhalError('NARWHAL_UNSUPPORTED_COMPRESSION',
      `NAR file is compressed with ${detected}, which narwhal cannot verify; use one of ${VERIFIABLE_COMPRESSIONS.join(', ')}`)
  }
  // Brotli is the one method without a magic number: anything unrecognised is tried as brotli.
  return detected === 'unknown' ? 'br' : detected
}

/** Turns a decoder's refusal of the bytes into one that names the method; passes others through. */
function explainDecodeError (err: unknown, method: Compression): unknown {
  if (isNarwhalError(err) || !(err instanceof DecodeError)) return err
  return new NarwhalError('NARWHAL_NAR_INVALID', method === 'br'
    ? `NAR file is neither a NAR nor compressed with a method narwhal verifies (${VERIFIABLE_COMPRESSIONS.join(', ')})`
    : `NAR file is not valid ${method} data (it does not decompress)`)
}

/**
 * Measures a NAR file as it is fed: counts and hashes the compressed bytes, detects the method
 * from the first bytes, decompresses, and checks and hashes the NAR inside. write() and end()
 * return a promise only when the decoder runs elsewhere (xz, gzip, brotli, bzip2); the caller
 * must wait for it before the next call.
 *
 * Both sizes are bounded as the bytes flow: the body by maxBytes, and the NAR it decompresses
 * to by maxNarSize, counted on each piece of decoder output before anything reads or hashes it.
 * So a body that expands without end (a zstd or xz bomb: a few KiB that decompress to
 * terabytes) is refused once the count passes the limit, not after the server has spent the CPU
 * of decompressing all of it. zstd and bzip2 hand their output over 256 KiB at a time and stop
 * within one such piece (bzip2's thread is ended); xz may still finish the 4 KiB of input
 * already handed to liblzma.
 */
class NarVerifier {
  readonly #maxBytes: number
  readonly #maxNarSize: number
  readonly #fileHash = createHash('sha256')
  readonly #narHash = createHash('sha256')
  readonly #reader = new NarReader()
  #bytes = 0
  /** Decompressed bytes so far. */
  #narBytes = 0
  /** The first chunks, kept until DETECTION_BYTES have arrived. */
  #head: Buffer[] = []
  #headBytes = 0
  #method: Compression | undefined
  #decoder: Decoder | undefined

  constructor (maxBytes: number, maxNarSize: number) {
    this.#maxBytes = maxBytes
    this.#maxNarSize = maxNarSize
  }

  write (chunk: Buffer): Promise<void> | undefined {
    this.#bytes += chunk.length
    if (this.#bytes > this.#maxBytes) throw tooLarge(this.#maxBytes)
    this.#fileHash.update(chunk)
    if (this.#decoder !== undefined) return this.#decode(this.#decoder, chunk)
    this.#head.push(chunk)
    this.#headBytes += chunk.length
    return this.#headBytes < DETECTION_BYTES ? undefined : this.#start()
  }

  /** The body is complete: the measurements, or the refusal. */
  async end (): Promise<IngestedNar> {
    if (this.#decoder === undefined) {
      if (this.#headBytes === 0) throw new NarwhalError('NARWHAL_NAR_INVALID', 'NAR file is empty')
      await this.#start()
    }
    const decoder = this.#decoder
    const method = this.#method
    if (decoder === undefined || method === undefined) throw new Error('NAR verifier has no decoder')
    try {
      await decoder.end()
    } catch (err) {
      throw explainDecodeError(err, method)
    }
    this.#reader.end()
    const fileHash = encodeNix32(this.#fileHash.digest())
    return {
      fileHash,
      fileSize: this.#bytes,
      compression: method,
      // Uncompressed, the file is the NAR: its bytes were hashed once, as the file.
      narHash: method === 'none' ? fileHash : encodeNix32(this.#narHash.digest()),
      narSize: Number(this.#reader.bytesRead)
    }
  }

  close (): void {
    this.#decoder?.close()
  }

  #start (): Promise<void> | undefined {
    const head = this.#head.length === 1 ? this.#head[0] ?? Buffer.alloc(0) : Buffer.concat(this.#head)
    this.#head = []
    const method = chooseMethod(head)
    const reader = this.#reader
    const narHash = this.#narHash
    this.#method = method
    this.#decoder = createDecoder(method, output => {
      // Thrown from the decoder's sink, this stops the decoder too (see DecodeSink in nix/decoder.ts).
      this.#narBytes += output.length
      if (this.#narBytes > this.#maxNarSize) throw narTooLarge(this.#maxNarSize)
      reader.write(output)
      if (method !== 'none') narHash.update(output)
    })
    return this.#decode(this.#decoder, head)
  }

  #decode (decoder: Decoder, chunk: Buffer): Promise<void> | undefined {
    const method = this.#method ?? 'none'
    let pending: Promise<void> | undefined
    try {
      pending = decoder.write(chunk)
    } catch (err) {
      throw explainDecodeError(err, method)
    }
    return pending?.catch(err => { throw explainDecodeError(err, method) })
  }
}

/**
 * The chunks of `body`, read with next() and never return(): leaving a request's iterator early
 * would destroy the request and its socket, and the refusal could not be answered.
 */
async function forEachChunk (body: AsyncIterable<Buffer>, onChunk: (chunk: Buffer) => Promise<void> | undefined): Promise<void> {
  const iterator = body[Symbol.asyncIterator]()
  for (;;) {
    const next = await iterator.next()
    if (next.done === true) return
    const pending = onChunk(next.value)
    if (pending !== undefined) await pending
  }
}

/** Bytes of a body held in memory while its pending blob is still being begun; past that, it waits. */
const BEFORE_TEMP_BYTES = 8 << 20

export async function ingestNar (body: AsyncIterable<Buffer>, expectedFileHash: string, store: BlobStore,
  options: IngestOptions): Promise<VerifiedNar> {
  await store.ensureRoom(options.declaredBytes, options.reserveBytes)
  // Begun while the first bytes arrive and are verified, not before: creating a temp file can
  // take milliseconds (blob-store.ts), more than receiving and verifying a small NAR, whose
  // pulling clients get their last bytes at onVerified (BENCHMARKS.md, pull-through).
  const beginning = store.begin(expectedFileHash)
  let begun: PendingBlob | undefined
  beginning.then(b => { begun = b }, () => {})
  let blob: PendingBlob | undefined
  let early: Buffer[] = []
  let earlyBytes = 0
  /** The pending blob, once the bytes held meanwhile are written to it. */
  const intoBlob = async (): Promise<PendingBlob> => {
    const b = await beginning
    blob = b
    const held = early
    early = []
    for (const chunk of held) {
      const writing = b.write(chunk)
      if (writing !== undefined) await writing
    }
    return b
  }
  const write = (chunk: Buffer): Promise<unknown> | undefined => {
    if (blob !== undefined) return blob.write(chunk)
    early.push(chunk)
    earlyBytes += chunk.length
    return begun !== undefined || earlyBytes >= BEFORE_TEMP_BYTES ? intoBlob() : undefined
  }
  const verifier = new NarVerifier(options.maxBytes, options.maxNarSize)
  try {
    await forEachChunk(body, chunk => {
      const decoding = verifier.write(chunk)
      const writing = write(chunk)
      if (decoding === undefined) return writing?.then(() => undefined)
      if (writing === undefined) return decoding
      return Promise.all([decoding, writing]).then(() => undefined)
    })
    const nar = await verifier.end()
    if (nar.fileHash !== expectedFileHash) {
      throw new NarwhalError('NARWHAL_NAR_INVALID',
        `NAR file bytes hash to sha256:${nar.fileHash}, not to the sha256:${expectedFileHash} in its name`)
    }
    options.onVerified?.(nar)
    const pending = blob ?? await intoBlob()
    await pending.finish()
    return { nar, blob: pending }
  } catch (err) {
    await (blob ?? await beginning.catch(() => undefined))?.discard()
    if ((err as NodeJS.ErrnoException).code === 'ENOSPC') {
      throw new NarwhalError('NARWHAL_INSUFFICIENT_STORAGE', 'the cache\'s disk filled up during the upload; nothing was stored')
    }
    throw err
  } finally {
    verifier.close()
  }
}

/**
 * For a re-upload of a NAR the cache already holds and verified: only check that the bytes hash
 * to the name, without storing them again.
 */
export async function checkReupload (body: AsyncIterable<Buffer>, expectedFileHash: string, maxBytes: number): Promise<void> {
  const hash = createHash('sha256')
  let bytes = 0
  for await (const chunk of body) {
    bytes += chunk.length
    if (bytes > maxBytes) throw tooLarge(maxBytes)
    hash.update(chunk)
  }
  const actual = encodeNix32(hash.digest())
  if (actual !== expectedFileHash) {
    throw new NarwhalError('NARWHAL_NAR_INVALID', `NAR file bytes hash to sha256:${actual}, not to the sha256:${expectedFileHash} in its name`)
  }
}

/**
 * Measures a stored NAR file the way ingestNar measured it on upload, for
 * `narwhal fsck --verify-content`: one streaming pass in constant memory over its chunks
 * (BlobBody.chunks). Throws the same refusals as an upload when the bytes no longer decompress to
 * a well-formed NAR.
 */
export async function measureStoredNar (source: AsyncIterable<Buffer>): Promise<IngestedNar> {
  // No limits: this measures what the cache holds, whatever the limits are now.
  const verifier = new NarVerifier(Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER)
  try {
    // for await: a failed check leaving the loop ends the source (a stream closes its file now).
    for await (const chunk of source) {
      const pending = verifier.write(chunk)
      if (pending !== undefined) await pending
    }
    return await verifier.end()
  } finally {
    verifier.close()
  }
}
