/**
 * Strict standard base64 (RFC 4648 §4, `+/` alphabet), as found in narinfo hashes, `Sig` lines
 * and key files:
 *
 *   sha256:<44 chars>   Sig: cache.nixos.org-1:<88 chars>   cache.nixos.org-1:6NCHdD59X431o0gW…jY=
 *
 * Node's own decoder skips characters it does not know and accepts URL-safe `-_`, so it would read
 * garbage as some bytes. Here only the canonical spelling of a byte string is accepted, so two
 * different strings can never stand for the same key, hash or signature.
 */

const PADDED = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/
const UNPADDED = /^[A-Za-z0-9+/]*$/

/** Decodes canonical padded base64, or returns undefined. */
export function tryDecodeBase64 (s: string): Buffer | undefined {
  if (!PADDED.test(s)) return undefined
  const bytes = Buffer.from(s, 'base64')
  // Re-encoding catches non-zero bits in the last character, which Node silently drops.
  return bytes.toString('base64') === s ? bytes : undefined
}

/** Decodes canonical base64 whose `=` padding may be left off (SRI hashes), or returns undefined. */
export function tryDecodeBase64Unpadded (s: string): Buffer | undefined {
  if (s.length % 4 === 1 || !UNPADDED.test(s)) return undefined
  const bytes = Buffer.from(s, 'base64')
  return bytes.toString('base64').replace(/=+$/, '') === s ? bytes : undefined
}

export function encodeBase64 (bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64')
}
