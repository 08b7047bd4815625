/**
 * The `name:base64` strings of Nix signing (fact sheet §6.1): signatures in narinfo `Sig` lines,
 * public keys and secret key files. All three are split at the FIRST colon.
 *
 *   Sig: cache.nixos.org-1:lo9EfNIL4eGRuNh7DTbAAffWPpI2SlYC/8uP7JnhgmfRIUNGhSbFe8qEaKN0mFS02TuhPpXFPNtRkFcCp0hGAQ==
 *        └─ key name ────┘ └─ base64 of a 64-byte Ed25519 signature ─────────────────────────────────────────┘
 *
 * This module only checks the format; it holds no crypto so the narinfo parser can use it.
 */

import { tryDecodeBase64 } from './base64.js'

export const SIGNATURE_BYTES = 64

export interface NamedBytes {
  name: string
  bytes: Buffer
}

/** Splits `name:base64` at the first colon and decodes; undefined unless the name is non-empty and
 * the base64 is canonical and exactly `size` bytes. */
export function tryParseNamedBytes (text: string, size: number): NamedBytes | undefined {
  const colon = text.indexOf(':')
  if (colon <= 0) return undefined
  const bytes = tryDecodeBase64(text.slice(colon + 1))
  if (bytes?.length !== size) return undefined
  return { name: text.slice(0, colon), bytes }
}

/** A `Sig` value: `name:base64(64 bytes)`. Undefined when malformed. */
export function tryParseSignature (sig: string): NamedBytes | undefined {
  return tryParseNamedBytes(sig, SIGNATURE_BYTES)
}

/** The key name a signature claims, or undefined if there is no colon. Never throws. */
export function signatureKeyName (sig: string): string | undefined {
  const colon = sig.indexOf(':')
  return colon < 0 ? undefined : sig.slice(0, colon)
}
