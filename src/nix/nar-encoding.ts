/**
 * How a NAR writes a string (and a file's contents): its length as a u64 little-endian, its
 * bytes, then zeros up to the next multiple of 8 (nar-reader.ts reads it back).
 *
 *   str("(") = 01 00 00 00 00 00 00 00  28 00 00 00 00 00 00 00
 *
 * The one encoder for the pusher's NAR writer, the benchmarks and the tests' hand-made NARs.
 */

const ZEROS = Buffer.alloc(8)

/** The u64 little-endian length that opens a string or a file's contents. */
export function narLength (length: number | bigint): Buffer {
  const b = Buffer.alloc(8)
  b.writeBigUInt64LE(BigInt(length))
  return b
}

/** The zeros that follow `length` bytes of a string or of file contents (a shared buffer: read only). */
export function narPadding (length: number | bigint): Buffer {
  return ZEROS.subarray(0, Number((8n - BigInt(length) % 8n) % 8n))
}

/** One NAR string: its length, its bytes, zero padding to a multiple of 8. */
export function narString (s: string | Uint8Array): Buffer {
  const bytes = typeof s === 'string' ? Buffer.from(s, 'utf8') : Buffer.from(s.buffer, s.byteOffset, s.byteLength)
  return Buffer.concat([narLength(bytes.length), bytes, narPadding(bytes.length)])
}
