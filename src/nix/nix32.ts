/**
 * nix32: Nix's own base-32 encoding of hashes and store path digests.
 *
 * It is not RFC 4648 base32. The alphabet drops e, o, u and t (so hashes never spell words), and
 * the characters are emitted from the last 5-bit group of the little-endian byte string to the
 * first ([2.8] `src/libutil/hash.cc` `printHash32`, fact sheet §5.2). For example:
 *
 *   sha256("")  ->  0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73   (32 bytes -> 52 chars)
 *
 * Decoding is case-sensitive, like Nix: uppercase is not nix32.
 */

import { NarwhalError } from '../errors.js'

export const NIX32_ALPHABET = '0123456789abcdfghijklmnpqrsvwxyz'

/** Character code -> digit value, or -1. Built once so decoding is a table lookup. */
const DIGIT_OF: Int8Array = (() => {
  const table = new Int8Array(128).fill(-1)
  for (let i = 0; i < NIX32_ALPHABET.length; i++) table[NIX32_ALPHABET.charCodeAt(i)] = i
  return table
})()

/** Characters needed for `byteCount` bytes: ceil(bits / 5). 52 for SHA-256, 32 for a path digest. */
export function nix32Length (byteCount: number): number {
  return Math.ceil((byteCount * 8) / 5)
}

export function encodeNix32 (bytes: Uint8Array): string {
  const len = nix32Length(bytes.length)
  let out = ''
  for (let n = len - 1; n >= 0; n--) {
    const b = n * 5
    const i = b >>> 3
    const j = b & 7
    const lo = bytes[i] ?? 0
    // The group may straddle two bytes; past the last byte there is nothing to borrow from.
    const hi = i + 1 < bytes.length ? (bytes[i + 1] ?? 0) : 0
    out += NIX32_ALPHABET[((lo >> j) | (hi << (8 - j))) & 0x1f]
  }
  return out
}

/**
 * Decodes nix32, or returns undefined. The length must be one `encodeNix32` can produce, and the
 * bits the first character holds beyond the last byte must be zero: Nix refuses those too, so
 * every byte string has exactly one spelling.
 */
export function tryDecodeNix32 (s: string): Buffer | undefined {
  const byteCount = Math.floor((s.length * 5) / 8)
  if (nix32Length(byteCount) !== s.length) return undefined
  const out = Buffer.alloc(byteCount)
  for (let n = 0; n < s.length; n++) {
    const code = s.charCodeAt(s.length - n - 1)
    const digit = code < 128 ? (DIGIT_OF[code] ?? -1) : -1
    if (digit < 0) return undefined
    const b = n * 5
    const i = b >>> 3
    const j = b & 7
    out[i] = (out[i] ?? 0) | ((digit << j) & 0xff)
    const carry = digit >> (8 - j)
    if (i + 1 < byteCount) {
      out[i + 1] = (out[i + 1] ?? 0) | carry
    } else if (carry !== 0) {
      return undefined
    }
  }
  return out
}

/** Like `tryDecodeNix32`, but throws NARWHAL_BAD_REQUEST. */
export function decodeNix32 (s: string): Buffer {
  const bytes = tryDecodeNix32(s)
  if (bytes === undefined) {
    throw new NarwhalError('NARWHAL_BAD_REQUEST', 'not a nix32 string: wrong length, a character outside ' +
      `"${NIX32_ALPHABET}", or non-zero unused bits`)
  }
  return bytes
}
