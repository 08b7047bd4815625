/**
 * Store paths: `/nix/store/<hash part>-<name>` (fact sheet §5.1).
 *
 *   /nix/store/xcp9cav49dmsjbwdjlmkjxj10gkpx553-hello-2.10
 *              └──── 32 nix32 chars ─────────┘ └─ name ─┘
 *
 * The narinfo `StorePath` is a full path; `References` and `Deriver` hold base names (the part
 * after `/nix/store/`). The rules are Nix's ([2.8] `src/libstore/path.cc`) plus the ones master
 * added (a `-` after the hash, no `.`/`..` names), so every path accepted here is one that every
 * Nix version accepts.
 */

import { NarwhalError, type ErrorCode } from '../errors.js'

/** narwhal serves the default store only: the store dir is part of every signed fingerprint. */
export const STORE_DIR = '/nix/store'

/** The 32-char digest of a store path (narinfo names, `log/` URLs). Regex source, no anchors. */
export const HASH_PART_PATTERN = '[0-9a-df-np-sv-z]{32}'
/** A nix32 SHA-256 as used in NAR file names (`nar/<52 chars>.nar.xz`). Regex source, no anchors. */
export const FILE_HASH_PATTERN = '[0-9a-df-np-sv-z]{52}'

/** Nix's `StorePath::MaxPathLen`. */
export const MAX_NAME_LENGTH = 211

const HASH_PART = new RegExp(`^${HASH_PART_PATTERN}$`)
const NAME = /^[0-9a-zA-Z+\-._?=]{1,211}$/

export interface StorePathParts {
  hashPart: string
  name: string
}

export function isValidHashPart (s: string): boolean {
  return HASH_PART.test(s)
}

export function isValidStorePathName (name: string): boolean {
  return NAME.test(name) && name !== '.' && name !== '..' && !name.startsWith('.-') && !name.startsWith('..-')
}

/** Splits `<hash>-<name>`; `field` starts the error message, e.g. "narinfo field References". */
export function parseStorePathBaseName (base: string, field: string, code: ErrorCode = 'NARWHAL_BAD_REQUEST'): StorePathParts {
  const hashPart = base.slice(0, 32)
  if (!isValidHashPart(hashPart) || base[32] !== '-') {
    throw new NarwhalError(code, `${field}: "${clip(base)}" does not start with a 32-character nix32 hash and "-"`)
  }
  const name = base.slice(33)
  if (!isValidStorePathName(name)) {
    throw new NarwhalError(code, `${field}: "${clip(base)}" has an invalid name (1-211 characters of ` +
      '0-9 a-z A-Z + - . _ ? =, not "." or "..", not starting ".-" or "..-")')
  }
  return { hashPart, name }
}

/** Parses a full path. It must be exactly `/nix/store/<base>`: no other store, no `//` or `..`. */
export function parseStorePath (full: string, field: string, code: ErrorCode = 'NARWHAL_BAD_REQUEST'): StorePathParts & { baseName: string } {
  const prefix = STORE_DIR + '/'
  if (!full.startsWith(prefix)) {
    throw new NarwhalError(code, `${field}: "${clip(full)}" is not in ${STORE_DIR}`)
  }
  const baseName = full.slice(prefix.length)
  return { ...parseStorePathBaseName(baseName, field, code), baseName }
}

/** Error messages echo the input, so keep a hostile one short. */
function clip (s: string): string {
  const shown = s.length > 80 ? s.slice(0, 80) + '…' : s
  return JSON.stringify(shown).slice(1, -1)
}
