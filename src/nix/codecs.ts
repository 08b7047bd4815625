/**
 * Streaming decompressors (and compressors) for NAR bodies, one per method in
 * `nix/compression.ts`, all in constant memory whatever the size: xz via liblzma (lzma-native),
 * zstd via libzstd (zstd-napi), bzip2 in pure JavaScript (unbzip2-stream), gzip and brotli from
 * Node's own zlib. "Constant" includes bodies made to expand without end (see XZ_INPUT_SLICE and
 * bzip2-decoder.ts): output never piles up faster than the callback takes it.
 *
 * Two shapes. createCompressor gives Node Transforms, for the pusher and for tests. createDecoder
 * gives what the upload path uses (storage/nar-ingest.ts): a decoder that hands its output to a
 * callback. For zstd and uncompressed bodies it is synchronous: each input chunk is
 * decompressed in a loop into one output buffer that is reused for every call, and each filled
 * buffer is handed to the callback, which must consume it before returning (a hash and the NAR
 * reader do). Only a chunk that expands past 8 MiB continues after a turn of the event loop.
 * Measured with bench/ingest-cpu.ts, this takes libzstd's own time (about what `zstd -d` takes)
 * where zstd-napi's DecompressStream allocated a fresh 128 KiB buffer per output
 * chunk and pushed each through a stream: 1.7× the CPU for a 1 GB NAR. Decompression contexts are
 * kept for the next upload: creating one (and its window buffer) per upload cost about 0.4 ms of
 * CPU, mostly in the garbage collections its native memory set off, more than a small NAR's
 * whole verification. bzip2 is decoded a block at a time on a worker thread (bzip2-thread.ts). The
 * other methods wrap their Transform (decompressingTransform).
 */
import { PassThrough, Transform, type Duplex, type TransformCallback } from 'node:stream'
import zlib from 'node:zlib'
import lzma from 'lzma-native'
import { CompressStream } from 'zstd-napi'
import zstdBinding from 'zstd-napi/binding.js'
import type { Compression } from './compression.js'
import { Bzip2ThreadDecoder } from './bzip2-thread.js'
import { DecodeError, type DecodeSink, type Decoder } from './decoder.js'

/** A compressing Transform, for the pusher and for tests. */
export function createCompressor (method: Compression, level?: number): Transform {
  switch (method) {
    case 'none': return new PassThrough({ highWaterMark: 1 << 20 })
    case 'xz': return driveInner(lzma.createCompressor({ preset: level ?? 6 }))
    case 'zstd': return new CompressStream(level === undefined ? {} : { compressionLevel: level })
    case 'gzip': return zlib.createGzip(level === undefined ? {} : { level })
    case 'br': return zlib.createBrotliCompress()
    case 'bzip2': throw new Error('narwhal does not compress with bzip2; use zstd or xz')
  }
}

/**
 * xz input is handed to liblzma this many bytes at a time, each piece decoded before the next is
 * given: lzma-native decodes all of the input it is given before the output can be read, and xz
 * expands a NAR of zeros thousands of times, so the piece bounds the memory one step can take.
 * Smaller pieces cost more CPU (BENCHMARKS.md, "Decompression bombs").
 */
const XZ_INPUT_SLICE = 4096

/**
 * Drives a stream that does not follow Node's current stream contract from a real Transform:
 * lzma-native's readable-stream@3 Transform never reports its end inside stream.pipeline() (seen
 * here with Node 20: all bytes arrive, the pipeline never settles); plain write()/'data'/'end'
 * work. With `sliceBytes`, each chunk goes in as pieces of at most that size, each written once
 * the previous one was decoded (its write callback).
 */
function driveInner (inner: Duplex, sliceBytes?: number): Transform {
  let failed: Error | undefined
  const outer = new Transform({
    transform (chunk: Buffer, _enc, done: TransformCallback) {
      if (failed !== undefined) { done(failed); return }
      if (sliceBytes !== undefined) {
        const writeFrom = (offset: number): void => {
          if (failed !== undefined) { done(failed); return }
          if (offset >= chunk.length) { done(); return }
          inner.write(chunk.subarray(offset, offset + sliceBytes), () => { writeFrom(offset + sliceBytes) })
        }
        writeFrom(0)
        return
      }
      // Input-side backpressure: wait while the inner stream's buffer is full.
      if (inner.write(chunk)) done()
      else inner.once('drain', () => done(failed))
    },
    flush (done: TransformCallback) {
      if (failed !== undefined) { done(failed); return }
      inner.once('end', () => done(failed))
      inner.end()
    }
  })
  inner.on('data', (data: Buffer) => outer.push(data))
  inner.on('error', (err: Error) => {
    failed = err
    outer.destroy(err)
  })
  return outer
}

export { DecodeError, type DecodeSink, type Decoder } from './decoder.js'

/** A Decoder for a verifiable method (see the module comment for which are synchronous). */
export function createDecoder (method: Compression, sink: DecodeSink): Decoder {
  switch (method) {
    case 'none': return { write: (chunk) => { sink(chunk); return undefined }, end: () => undefined, close: () => {} }
    case 'zstd': return new ZstdDecoder(sink)
    case 'bzip2': return new Bzip2ThreadDecoder(sink)
    case 'xz': case 'gzip': case 'br': return new TransformDecoder(decompressingTransform(method), sink)
  }
}

/** The Transform a TransformDecoder drives, for the methods decoded through one. */
function decompressingTransform (method: 'xz' | 'gzip' | 'br'): Transform {
  switch (method) {
    case 'xz': return driveInner(lzma.createDecompressor(), XZ_INPUT_SLICE)
    case 'gzip': return zlib.createGunzip({ chunkSize: 1 << 18 })
    case 'br': return zlib.createBrotliDecompress({ chunkSize: 1 << 18 })
  }
}

// ---------------------------------------------------------------------------------------------
// zstd, synchronous

/**
 * Shared by every zstd decoder: one is ever in its loop at a time (the loop is synchronous), and
 * the sink consumes the bytes before the loop goes on. 256 KiB: larger gained nothing measurable,
 * and it stays in the CPU's cache.
 */
const ZSTD_OUTPUT = Buffer.allocUnsafe(256 * 1024)

/** Output per turn of the event loop, about 10 ms of decompressing, hashing and reading here. */
const ZSTD_OUTPUT_PER_TURN = 8 * 1024 * 1024

/** Idle decompression contexts, kept for the next upload. */
const idleContexts: zstdBinding.DCtx[] = []
const MAX_IDLE_CONTEXTS = 4
/**
 * A context keeps its window buffer, as large as its frames' window (zstd allows up to 128 MiB by
 * default). One is kept only when its single frame declared at most this much, as every level up
 * to 19 does, so four idle contexts hold at most about 33 MiB.
 */
const MAX_POOLED_WINDOW = 8 * 1024 * 1024

class ZstdDecoder implements Decoder {
  readonly #sink: DecodeSink
  #context: zstdBinding.DCtx | undefined
  /** True between a frame's first byte and its end. */
  #inFrame = false
  /** The first frame's header, collected until the window size can be read. */
  #header: Buffer | undefined = Buffer.alloc(0)
  #window: number | undefined
  #frames = 0
  #failed = false

  constructor (sink: DecodeSink) {
    this.#sink = sink
    this.#context = idleContexts.pop() ?? new zstdBinding.DCtx()
  }

  write (chunk: Buffer): Promise<void> | undefined {
    const context = this.#context
    if (context === undefined) throw new Error('zstd decoder used after close')
    // An empty input would only ask libzstd for a hint, which reads as "inside a frame".
    if (chunk.length === 0) return undefined
    if (this.#header !== undefined) this.#readHeader(chunk)
    return this.#run(context, chunk)
  }

  /**
   * Decompresses `input` until it is consumed and flushed. A chunk that expands beyond
   * ZSTD_OUTPUT_PER_TURN (a well-formed NAR of a huge file of zeros compresses by a factor of
   * thousands) goes on after a turn of the event loop, so other requests are not held up.
   */
  #run (context: zstdBinding.DCtx, input: Buffer): Promise<void> | undefined {
    let budget = ZSTD_OUTPUT_PER_TURN
    for (;;) {
      let result: [number, number, number]
      try {
        result = context.decompressStream(ZSTD_OUTPUT, input)
      } catch (err) {
        this.#failed = true
        throw new DecodeError((err as Error).message)
      }
      const [remaining, produced, consumed] = result
      if (produced > 0) {
        try {
          this.#sink(ZSTD_OUTPUT.subarray(0, produced))
        } catch (err) {
          this.#failed = true
          throw err
        }
      }
      if (remaining === 0) this.#frames++
      input = input.subarray(consumed)
      // Done with this chunk once it is consumed and the context holds no more output: it filled
      // less than the whole buffer, or a frame just ended.
      if (input.length === 0 && (produced < ZSTD_OUTPUT.length || remaining === 0)) {
        this.#inFrame = remaining !== 0
        return undefined
      }
      if (produced === 0 && consumed === 0) {
        // libzstd always progresses or reports an error; never spin if it did not.
        this.#failed = true
        throw new DecodeError('zstd decompression made no progress')
      }
      budget -= produced
      if (budget <= 0) {
        const rest = input
        return new Promise<void>(resolve => setImmediate(resolve)).then(() => {
          if (this.#context !== context) throw new Error('zstd decoder closed while decompressing')
          return this.#run(context, rest)
        })
      }
    }
  }

  end (): undefined {
    if (this.#inFrame) {
      this.#failed = true
      throw new DecodeError('zstd data ends in the middle of a frame')
    }
    return undefined
  }

  close (): void {
    const context = this.#context
    if (context === undefined) return
    this.#context = undefined
    const window = this.#window
    if (!this.#failed && !this.#inFrame && this.#frames <= 1 && window !== undefined && window <= MAX_POOLED_WINDOW &&
      idleContexts.length < MAX_IDLE_CONTEXTS) {
      context.reset(zstdBinding.ResetDirective.sessionOnly)
      idleContexts.push(context)
    }
  }

  /** Collects the first frame header's bytes until its window size is known (or unknowable). */
  #readHeader (chunk: Buffer): void {
    const header = Buffer.concat([this.#header ?? Buffer.alloc(0), chunk.subarray(0, ZSTD_MAX_HEADER_BYTES)])
    const window = zstdFrameWindow(header)
    if (window === 'more' && header.length < ZSTD_MAX_HEADER_BYTES) {
      this.#header = header
      return
    }
    this.#header = undefined
    this.#window = typeof window === 'number' ? window : undefined
  }
}

/** Magic (4), descriptor (1), window descriptor (1), dictionary id (up to 4), content size (up to 8). */
const ZSTD_MAX_HEADER_BYTES = 18

/**
 * The window size a zstd frame header declares, which is what a decoder allocates for it (RFC 8878
 * section 3.1.1.1): 'more' when `header` is too short to tell, undefined when it is not a plain zstd
 * frame header (a skippable frame, or garbage the decoder will refuse).
 */
export function zstdFrameWindow (header: Buffer): number | 'more' | undefined {
  if (header.length < 5) return 'more'
  if (header.readUInt32LE(0) !== 0xfd2fb528) return undefined
  const descriptor = header[4] ?? 0
  const singleSegment = (descriptor & 0x20) !== 0
  if (!singleSegment) {
    if (header.length < 6) return 'more'
    const windowDescriptor = header[5] ?? 0
    const base = 2 ** (10 + (windowDescriptor >> 3))
    return base + (base / 8) * (windowDescriptor & 7)
  }
  // A single-segment frame's window is its content size, which follows the dictionary id.
  const dictionaryBytes = [0, 1, 2, 4][descriptor & 3] ?? 0
  const sizeBytes = [1, 2, 4, 8][descriptor >> 6] ?? 8
  const at = 5 + dictionaryBytes
  if (header.length < at + sizeBytes) return 'more'
  switch (sizeBytes) {
    case 1: return header.readUInt8(at)
    case 2: return header.readUInt16LE(at) + 256
    case 4: return header.readUInt32LE(at)
    default: return Number(header.readBigUInt64LE(at))
  }
}

// ---------------------------------------------------------------------------------------------
// Every other method: a Transform driven from the decoder calls

class TransformDecoder implements Decoder {
  readonly #transform: Transform
  #failure: unknown = undefined
  #failed = false

  constructor (transform: Transform, sink: DecodeSink) {
    this.#transform = transform
    transform.on('data', (output: Buffer) => {
      if (this.#failed) return
      try {
        sink(output)
      } catch (err) {
        this.#fail(err)
        transform.destroy()
      }
    })
    transform.on('error', (err: Error) => { this.#fail(new DecodeError(err.message)) })
  }

  async write (chunk: Buffer): Promise<void> {
    this.#check()
    if (!this.#transform.write(chunk)) await this.#settled('drain')
    this.#check()
  }

  async end (): Promise<void> {
    this.#check()
    this.#transform.end()
    await this.#settled('end')
    this.#check()
  }

  close (): void {
    this.#transform.destroy()
  }

  #fail (err: unknown): void {
    if (this.#failed) return
    this.#failed = true
    this.#failure = err
  }

  #check (): void {
    if (this.#failed) throw this.#failure
  }

  /** Waits for `event`, or for the stream to fail or close, whichever comes first. */
  async #settled (event: 'drain' | 'end'): Promise<void> {
    const transform = this.#transform
    await new Promise<void>(resolve => {
      const done = (): void => {
        transform.off(event, done)
        transform.off('error', done)
        transform.off('close', done)
        resolve()
      }
      transform.on(event, done)
      transform.on('error', done)
      transform.on('close', done)
    })
    if (!this.#failed && event === 'end' && !this.#transform.readableEnded) this.#fail(new DecodeError('decompressor closed early'))
  }
}
