/**
 * A bzip2 Decoder (storage/codecs.ts) in bounded memory, around unbzip2-stream's block decoder.
 *
 * unbzip2-stream's own stream collects each decoded block in a JavaScript array, a number per
 * byte, and decodes every block it has input for at once. A bzip2 block of zeros is about 40
 * bytes and expands to about 46 MB, so an 867-byte upload (a NAR of 1 GiB of zeros) took the
 * server to 2.9 GB of memory and a minute of CPU. Here the same block decoder (lib/bzip2.js, the
 * code unbzip2-stream runs) writes each byte into one 256 KiB buffer that goes to the sink
 * whenever it fills, and the event loop gets a turn between blocks. Memory: the decoder's
 * 3.6 MB block table and that buffer. A block is still decoded in one go, synchronously: up to
 * 46 MB of output, a fraction of a second here, during which its thread does nothing else. So
 * the server runs it on a worker thread (bzip2-thread.ts), not on the event loop.
 */
import bzip2 from 'unbzip2-stream/lib/bzip2.js'
import bitIterator, { type BitReader } from 'unbzip2-stream/lib/bit_iterator.js'
import { DecodeError, type DecodeSink, type Decoder } from './decoder.js'

/**
 * Shared by every bzip2 decoder: a block is decoded synchronously and flushed before the event
 * loop turns, so no two decoders fill it at once.
 */
const OUTPUT = Buffer.allocUnsafe(256 * 1024)

/**
 * Input that must be buffered before a block is decoded: the block decoder cannot stop for more
 * input in the middle of a block, so wait for the largest a compressed block can be (the rule
 * unbzip2-stream uses). At the end of the input whatever is left is decoded.
 */
function bytesForNextBlock (blockSize: number): number {
  return 25_000 + 100_000 * blockSize
}

export class Bzip2Decoder implements Decoder {
  readonly #sink: DecodeSink
  readonly #queue: Buffer[] = []
  /** Made at the first input: it takes its first buffer from the queue when it is made. */
  #bits: BitReader | undefined
  #received = 0
  /** 0 until a stream header was read; 1-9 (hundreds of kB per block) after. */
  #blockSize = 0
  /** The running CRC of the current stream; null between streams (none begun, or one ended). */
  #streamCrc: number | null = null
  #table: Int32Array | undefined
  #used = 0
  #sinkError: unknown = undefined
  #closed = false

  constructor (sink: DecodeSink) {
    this.#sink = sink
  }

  write (chunk: Buffer): Promise<void> | undefined {
    if (chunk.length === 0) return undefined
    this.#queue.push(chunk)
    this.#received += chunk.length
    this.#bits ??= bitIterator(() => this.#queue.shift())
    return this.#decode(false)
  }

  end (): Promise<void> | undefined {
    const decoding = this.#decode(true)
    const check = (): void => {
      if (this.#streamCrc !== null) throw new DecodeError('bzip2 data ends in the middle of a stream')
    }
    if (decoding === undefined) { check(); return undefined }
    return decoding.then(check)
  }

  close (): void {
    this.#closed = true
    this.#queue.length = 0
    this.#table = undefined
  }

  /** Decodes blocks while there is input enough for one (at the end: while any is left). */
  #decode (final: boolean): Promise<void> | undefined {
    let decoded = false
    for (;;) {
      if (this.#closed) throw new Error('bzip2 decoder used after close')
      const bits = this.#bits
      if (bits === undefined) return undefined // no input at all
      const buffered = this.#received - bits.bytesRead
      if (final ? buffered <= 0 : buffered + 1 < bytesForNextBlock(this.#blockSize)) return undefined
      // A block can be 46 MB of output: one per turn of the event loop.
      if (decoded) return new Promise<void>(resolve => setImmediate(resolve)).then(() => this.#decode(final))
      this.#decodeBlock(bits)
      decoded = true
    }
  }

  #decodeBlock (bits: BitReader): void {
    try {
      if (this.#blockSize === 0) {
        this.#blockSize = bzip2.header(bits)
        this.#streamCrc = 0
        this.#table = new Int32Array(100_000 * this.#blockSize)
        return
      }
      const table = this.#table ?? new Int32Array(100_000 * this.#blockSize)
      const crc = bzip2.decompress(bits, (byte) => { this.#put(byte) }, table, table.length, this.#streamCrc ?? 0)
      this.#flush()
      if (crc === null) {
        // The end of a stream; another may follow (pbzip2 writes several).
        this.#blockSize = 0
        this.#streamCrc = null
      } else {
        this.#streamCrc = crc
      }
    } catch (err) {
      this.#used = 0
      if (err === this.#sinkError) throw err
      // The block decoder throws its own errors, and a TypeError when the input ends inside a block.
      throw new DecodeError(`bzip2: ${(err as Error).message}`)
    }
  }

  #put (byte: number): void {
    OUTPUT[this.#used++] = byte
    if (this.#used === OUTPUT.length) this.#flush()
  }

  #flush (): void {
    if (this.#used === 0) return
    const output = OUTPUT.subarray(0, this.#used)
    this.#used = 0
    try {
      this.#sink(output)
    } catch (err) {
      this.#sinkError = err
      throw err
    }
  }
}
