/**
 * Receives a NAR file and proves it is what its name says before it becomes visible.
 *
 * One pass over the body, in constant memory:
 *
 *   body ──▶ sha256 + byte count (FileHash/FileSize) ──▶ temp file
 *                 └──▶ decompressor (method detected from the bytes) ──▶ NAR reader + sha256
 *
 * The bytes must hash to the name in the URL, decompress with the detected method, and form a
 * complete, well-formed NAR whose hash and size are returned for the metadata row. Only then is
 * the temp file synced and handed back, still under its temp name: the caller renames it into
 * place together with recording its row (cache/store-nar.ts). On any failure it is removed.
 */
import { createHash, type Hash } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { NarwhalError, isNarwhalError } from '../errors.js'
import { detectCompression, DETECTION_BYTES, VERIFIABLE_COMPRESSIONS, type Compression } from '../nix/compression.js'
import { encodeNix32 } from '../nix/nix32.js'
import { NarReader } from '../nix/nar-reader.js'
import type { BlobStore, TempFile } from './blob-store.js'
import { createDecompressor } from './codecs.js'

export interface IngestedNar {
  fileHash: string
  fileSize: number
  compression: Compression
  narHash: string
  narSize: number
}

/** A NAR proven to be what its name says, synced to disk under a temp name, not yet visible. */
export interface VerifiedNar {
  nar: IngestedNar
  temp: TempFile
}

export interface IngestOptions {
  /** Refuse bodies longer than this many bytes (compressed). */
  maxBytes: number
  /** The body's declared length (Content-Length), or 0 when unknown. */
  declaredBytes: number
  /** Free space the upload must leave on the disk (limits.freeSpaceReserveBytes). */
  reserveBytes: number
}

/** Splits the first bytes off an async iterable so the method can be detected, then replays all. */
async function withHead (body: AsyncIterable<Buffer>, n: number): Promise<{ head: Buffer, all: () => AsyncGenerator<Buffer> }> {
  const iterator = body[Symbol.asyncIterator]()
  const chunks: Buffer[] = []
  let length = 0
  let finished = false
  while (length < n) {
    const next = await iterator.next()
    if (next.done === true) { finished = true; break }
    chunks.push(next.value)
    length += next.value.length
  }
  const head = Buffer.concat(chunks)
  async function * all (): AsyncGenerator<Buffer> {
    if (head.length > 0) yield head
    if (finished) return
    for (;;) {
      const next = await iterator.next()
      if (next.done === true) return
      yield next.value
    }
  }
  return { head, all }
}

function tooLarge (maxBytes: number): NarwhalError {
  return new NarwhalError('NARWHAL_TOO_LARGE', `NAR file is larger than the limit of ${maxBytes} bytes (limits.narBytes)`)
}

/** Hashes and counts every chunk, writes it to the temp file, and passes it on. */
function storeAndHash (temp: TempFile, hash: Hash, counter: { bytes: number }, maxBytes: number) {
  return async function * (source: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
    for await (const chunk of source) {
      counter.bytes += chunk.length
      if (counter.bytes > maxBytes) throw tooLarge(maxBytes)
      hash.update(chunk)
      await temp.write(chunk)
      yield chunk
    }
  }
}

function narSink (reader: NarReader, hash: Hash): Writable {
  return new Writable({
    highWaterMark: 1 << 20,
    write (chunk: Buffer, _enc, done) {
      try {
        reader.write(chunk)
        hash.update(chunk)
        done()
      } catch (err) {
        done(err as Error)
      }
    },
    final (done) {
      try {
        reader.end()
        done()
      } catch (err) {
        done(err as Error)
      }
    }
  })
}

function chooseMethod (head: Buffer): Compression {
  const detected = detectCompression(head)
  if (detected === 'lz4' || detected === 'lzip') {
    throw new NarwhalError('NARWHAL_UNSUPPORTED_COMPRESSION',
      `NAR file is compressed with ${detected}, which narwhal cannot verify; use one of ${VERIFIABLE_COMPRESSIONS.join(', ')}`)
  }
  // Brotli is the one method without a magic number: anything unrecognised is tried as brotli.
  return detected === 'unknown' ? 'br' : detected
}

/** Turns a decompressor's error into a refusal that names the method; passes others through. */
function explainPipelineError (err: unknown, decompressError: Error | undefined, method: Compression): unknown {
  if (isNarwhalError(err)) return err
  // File-system errors (a full disk while writing the temp file) reach every stage of the
  // pipeline, the decompressor included; they are not the body's fault.
  if ((err as NodeJS.ErrnoException).syscall !== undefined) return err
  if (decompressError !== undefined && err === decompressError) {
    return new NarwhalError('NARWHAL_NAR_INVALID', method === 'br'
      ? `NAR file is neither a NAR nor compressed with a method narwhal verifies (${VERIFIABLE_COMPRESSIONS.join(', ')})`
      : `NAR file is not valid ${method} data (it does not decompress)`)
  }
  return err
}

export async function ingestNar (body: AsyncIterable<Buffer>, expectedFileHash: string, store: BlobStore,
  options: IngestOptions): Promise<VerifiedNar> {
  await store.ensureRoom(options.declaredBytes, options.reserveBytes)
  const temp = await store.createTemp()
  try {
    const { head, all } = await withHead(body, DETECTION_BYTES)
    if (head.length === 0) throw new NarwhalError('NARWHAL_NAR_INVALID', 'NAR file is empty')
    const method = chooseMethod(head)
    const fileHash = createHash('sha256')
    const narHash = createHash('sha256')
    const counter = { bytes: 0 }
    const reader = new NarReader()
    const decompressor = createDecompressor(method)
    let decompressError: Error | undefined
    decompressor.once('error', (err: Error) => { decompressError ??= err })
    try {
      await pipeline(all, storeAndHash(temp, fileHash, counter, options.maxBytes), decompressor, narSink(reader, narHash))
    } catch (err) {
      throw explainPipelineError(err, decompressError, method)
    }
    const actualFileHash = encodeNix32(fileHash.digest())
    if (actualFileHash !== expectedFileHash) {
      throw new NarwhalError('NARWHAL_NAR_INVALID',
        `NAR file bytes hash to sha256:${actualFileHash}, not to the sha256:${expectedFileHash} in its name`)
    }
    await temp.sync()
    const nar: IngestedNar = {
      fileHash: actualFileHash,
      fileSize: counter.bytes,
      compression: method,
      narHash: encodeNix32(narHash.digest()),
      narSize: Number(reader.bytesRead)
    }
    return { nar, temp }
  } catch (err) {
    await temp.discard()
    if ((err as NodeJS.ErrnoException).code === 'ENOSPC') {
      throw new NarwhalError('NARWHAL_INSUFFICIENT_STORAGE', 'the cache\'s disk filled up during the upload; nothing was stored')
    }
    throw err
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
 * `narwhal fsck --verify-content`: one streaming pass in constant memory. Throws the same
 * refusals as an upload when the bytes no longer decompress to a well-formed NAR.
 */
export async function measureStoredNar (file: string): Promise<IngestedNar> {
  const source = createReadStream(file, { highWaterMark: 1 << 20 })
  try {
    return await measure(source)
  } finally {
    // A failed pipeline stops reading part-way; close the file now rather than at garbage collection.
    source.destroy()
  }
}

async function measure (source: AsyncIterable<Buffer>): Promise<IngestedNar> {
  const { head, all } = await withHead(source, DETECTION_BYTES)
  if (head.length === 0) throw new NarwhalError('NARWHAL_NAR_INVALID', 'NAR file is empty')
  const method = chooseMethod(head)
  const fileHash = createHash('sha256')
  const narHash = createHash('sha256')
  let fileSize = 0
  const reader = new NarReader()
  const decompressor = createDecompressor(method)
  let decompressError: Error | undefined
  decompressor.once('error', (err: Error) => { decompressError ??= err })
  async function * hashed (chunks: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
    for await (const chunk of chunks) {
      fileSize += chunk.length
      fileHash.update(chunk)
      yield chunk
    }
  }
  try {
    await pipeline(all, hashed, decompressor, narSink(reader, narHash))
  } catch (err) {
    throw explainPipelineError(err, decompressError, method)
  }
  return {
    fileHash: encodeNix32(fileHash.digest()),
    fileSize,
    compression: method,
    narHash: encodeNix32(narHash.digest()),
    narSize: Number(reader.bytesRead)
  }
}
