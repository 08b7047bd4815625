/**
 * The narinfo `CA` field: how a content-addressed path was made ([2.8]
 * `src/libstore/content-address.cc` `parseContentAddress`).
 *
 *   CA: fixed:r:sha256:0p4g10gbcfbai4cdz5509rps0c9j2wfc9fw2ihxcxj0n9w9fr75j   (recursive NAR hash)
 *   CA: fixed:sha1:<hash>                                                   (flat file hash)
 *   CA: text:sha256:<hash>                                                  (builtins.toFile etc.)
 *
 * Nix 2.8 refuses a narinfo whose CA does not parse, so narwhal does too. The hash after the
 * algorithm is unprefixed and its encoding is chosen by length (hex, nix32 or base64).
 */

import { NarwhalError, type ErrorCode } from '../errors.js'
import { HASH_SIZES, isHashAlgorithm, tryDecodeHashBody } from './hash.js'

/** Throws unless `ca` is a content address Nix 2.8 would parse. */
export function checkContentAddress (ca: string, field: string, code: ErrorCode = 'NARWHAL_NARINFO_INVALID'): void {
  let rest: string
  let textOnly = false
  if (ca.startsWith('text:')) {
    rest = ca.slice(5)
    textOnly = true
  } else if (ca.startsWith('fixed:r:')) {
    rest = ca.slice(8)
  } else if (ca.startsWith('fixed:')) {
    rest = ca.slice(6)
  } else {
    throw new NarwhalError(code, `${field}: must start with "text:" or "fixed:"`)
  }
  const colon = rest.indexOf(':')
  const algo = colon < 0 ? '' : rest.slice(0, colon)
  if (!isHashAlgorithm(algo) || (textOnly && algo !== 'sha256')) {
    throw new NarwhalError(code, `${field}: needs a hash algorithm (${textOnly ? 'sha256' : 'md5, sha1, sha256 or sha512'}) and ":"`)
  }
  if (tryDecodeHashBody(rest.slice(colon + 1), HASH_SIZES[algo]) === undefined) {
    throw new NarwhalError(code, `${field}: the ${algo} hash is not valid hex, nix32 or base64 of the right length`)
  }
}
