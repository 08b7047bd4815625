/**
 * Hash strings as Nix writes and reads them in narinfo files (`Hash::parseAnyPrefixed`, fact
 * sheet §5.3). One SHA-256 can be spelled four ways, and all four parse to the same 32 bytes:
 *
 *   sha256:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73                (nix32, 52 chars)
 *   sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855    (hex, 64, any case)
 *   sha256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=                        (base64, 44)
 *   sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=                        (SRI)
 *
 * Nix always writes the first. Only SHA-256 is accepted for NarHash and FileHash: the client
 * compares the algorithm too, so any other hash could never match a download.
 */

import { createHash } from 'node:crypto'
import { NarwhalError, type ErrorCode } from '../errors.js'
import { tryDecodeBase64, tryDecodeBase64Unpadded } from './base64.js'
import { encodeNix32, nix32Length, tryDecodeNix32 } from './nix32.js'

/** Digest sizes of the algorithms Nix knows (`parseHashType`). */
export const HASH_SIZES = { md5: 16, sha1: 20, sha256: 32, sha512: 64 } as const
export type HashAlgorithm = keyof typeof HASH_SIZES

export function isHashAlgorithm (s: string): s is HashAlgorithm {
  return Object.hasOwn(HASH_SIZES, s)
}

const HEX = /^[0-9a-fA-F]*$/

/**
 * Decodes the part after `<algo>:`, choosing the encoding by length as Nix does: base16, then
 * nix32, then padded base64. Returns undefined for anything else.
 */
export function tryDecodeHashBody (body: string, byteCount: number): Buffer | undefined {
  if (body.length === byteCount * 2) return HEX.test(body) ? Buffer.from(body, 'hex') : undefined
  if (body.length === nix32Length(byteCount)) return tryDecodeNix32(body)
  if (body.length === Math.ceil(byteCount / 3) * 4) {
    const bytes = tryDecodeBase64(body)
    return bytes?.length === byteCount ? bytes : undefined
  }
  return undefined
}

/** Parses a prefixed SHA-256 hash; `field` starts the error message, e.g. "narinfo field NarHash". */
export function parseNixHash (s: string, field: string, code: ErrorCode = 'NARWHAL_NARINFO_INVALID'): Buffer {
  let bytes: Buffer | undefined
  if (s.startsWith('sha256:')) {
    bytes = tryDecodeHashBody(s.slice(7), 32)
  } else if (s.startsWith('sha256-')) {
    // SRI is always base64; Nix stops at the first '=', so the padding may be missing.
    const decoded = tryDecodeBase64(s.slice(7)) ?? tryDecodeBase64Unpadded(s.slice(7))
    bytes = decoded?.length === 32 ? decoded : undefined
  } else {
    throw new NarwhalError(code, `${field}: must be a SHA-256 hash starting with "sha256:" or "sha256-"`)
  }
  if (bytes === undefined) {
    throw new NarwhalError(code, `${field}: must be 64 hex, 52 nix32 or 44 base64 characters of a SHA-256 hash`)
  }
  return bytes
}

/** The spelling Nix writes and signs: `sha256:<nix32>`. */
export function formatNixHash (bytes: Uint8Array): string {
  if (bytes.length !== 32) throw new NarwhalError('NARWHAL_INTERNAL', `a SHA-256 hash has 32 bytes, not ${bytes.length}`)
  return 'sha256:' + encodeNix32(bytes)
}

/** nix32 of the SHA-256 of `data`, as used in NAR file names (`nar/<nix32>.nar.xz`). */
export function sha256Nix32 (data: Uint8Array | string): string {
  return encodeNix32(createHash('sha256').update(data).digest())
}
