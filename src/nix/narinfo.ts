/**
 * `.narinfo` files: the metadata of one store path in a binary cache (fact sheet §3).
 *
 *   StorePath: /nix/store/m6w0ra3ns1bjzrazws3m2m2gn9z4rlng-dep-a
 *   URL: nar/1xsjkazpfgyyy38br89kz2plvdb4dkqcjl5mh0n2py3ndf0sc48j.nar.xz
 *   Compression: xz
 *   FileHash: sha256:1xsjkazpfgyyy38br89kz2plvdb4dkqcjl5mh0n2py3ndf0sc48j
 *   FileSize: 128
 *   NarHash: sha256:00kjynz8n03652qccs76ivsvark3pr3dfr6w1ba3x7bx83kcknvv
 *   NarSize: 120
 *   References:                      <- "References: " with a trailing space when empty
 *   Deriver: 6091y2lwc4f6xknmiym1kaix9cxkw1y5-dep-a.drv
 *   Sig: test-1:+90c4jUxKEZ+D9XJmlJqJcBvCk/NBd430JQF52L/rwMQwfCnAbZmjxgmFajhXlh3k15eAsl4YqA1NzY21Yd4CQ==
 *
 * The parser accepts what Nix 2.8 accepts, except where Nix would quietly read something other
 * than what was written (a CRLF line, `Key:value` losing a character, a second StorePath
 * overriding the first). narwhal stores untrusted uploads, so it refuses those instead of guessing.
 * It is also stricter about numbers: canonical decimal only, so a parsed file formats back to the
 * same bytes. The formatter writes exactly what Nix's `NarInfo::to_string` writes.
 */

import { NarwhalError } from '../errors.js'
import { tryParseSignature } from './signature.js'
import { checkContentAddress } from './content-address.js'
import { formatNixHash, parseNixHash } from './hash.js'
import { parseStorePath, parseStorePathBaseName } from './store-path.js'

export interface NarInfo {
  /** Full path, `/nix/store/<hash>-<name>`. */
  storePath: string
  url: string
  /** As written; an absent or empty field means `bzip2` to Nix, so that is what is stored. */
  compression: string
  /** SHA-256 of the compressed file, 32 bytes. */
  fileHash?: Buffer
  fileSize?: bigint
  /** SHA-256 of the uncompressed NAR, 32 bytes. */
  narHash: Buffer
  /** Always > 0. */
  narSize: bigint
  /** Base names, in the order written. */
  references: string[]
  /** Base name of a `.drv`; the literal `unknown-deriver` parses to undefined. */
  deriver?: string
  /** Raw `name:base64` strings, in the order written. */
  sigs: string[]
  ca?: string
}

export const MAX_NARINFO_BYTES = 1024 * 1024
export const MAX_NARINFO_LINES = 10_000

/** Fields that may appear once. `Sig` may repeat; unknown keys (e.g. `System`) are ignored. */
const SINGLE_VALUED = new Set(['StorePath', 'URL', 'Compression', 'FileHash', 'FileSize', 'NarHash', 'NarSize',
  'References', 'Deriver', 'CA'])

const U64_MAX = (1n << 64n) - 1n
const CANONICAL_DECIMAL = /^(?:0|[1-9][0-9]{0,19})$/

export function parseNarInfo (text: string): NarInfo {
  if (text.length > MAX_NARINFO_BYTES || Buffer.byteLength(text, 'utf8') > MAX_NARINFO_BYTES) {
    throw invalid('narinfo', 'larger than 1 MiB')
  }
  if (text.includes('\r')) throw invalid('narinfo', 'contains "\\r"; lines must end in "\\n" only')
  if (!text.endsWith('\n')) throw invalid('narinfo', 'the last line must end in "\\n"')

  const lines = text.split('\n')
  lines.pop() // the empty string after the final "\n"
  if (lines.length > MAX_NARINFO_LINES) throw invalid('narinfo', `more than ${MAX_NARINFO_LINES} lines`)

  const fields = new Map<string, string>()
  const sigs: string[] = []
  for (const [index, line] of lines.entries()) {
    const colon = line.indexOf(':')
    // Nix takes the value from two bytes after the colon; without the space it loses a character.
    if (colon <= 0 || line[colon + 1] !== ' ') throw invalid(`narinfo line ${index + 1}`, 'must be "Key: value"')
    const key = line.slice(0, colon)
    const value = line.slice(colon + 2)
    if (key === 'Sig') {
      sigs.push(value)
    } else if (SINGLE_VALUED.has(key)) {
      if (fields.has(key)) throw invalid(field(key), 'appears more than once')
      fields.set(key, value)
    }
  }

  const storePath = required(fields, 'StorePath')
  parseStorePath(storePath, field('StorePath'), 'NARWHAL_NARINFO_INVALID')

  const url = required(fields, 'URL')
  if (url === '') throw invalid(field('URL'), 'must not be empty')

  const info: NarInfo = {
    storePath,
    url,
    compression: compressionOf(fields.get('Compression')),
    narHash: parseNixHash(required(fields, 'NarHash'), field('NarHash')),
    narSize: parseU64(required(fields, 'NarSize'), 'NarSize'),
    references: parseReferences(fields.get('References') ?? ''),
    sigs
  }
  if (info.narSize === 0n) throw invalid(field('NarSize'), 'must be a positive decimal integer')

  const fileHash = fields.get('FileHash')
  if (fileHash !== undefined) info.fileHash = parseNixHash(fileHash, field('FileHash'))
  const fileSize = fields.get('FileSize')
  if (fileSize !== undefined) info.fileSize = parseU64(fileSize, 'FileSize')

  const deriver = fields.get('Deriver')
  if (deriver !== undefined && deriver !== 'unknown-deriver') {
    parseStorePathBaseName(deriver, field('Deriver'), 'NARWHAL_NARINFO_INVALID')
    if (!deriver.endsWith('.drv')) throw invalid(field('Deriver'), 'must name a ".drv" or be "unknown-deriver"')
    info.deriver = deriver
  }

  for (const sig of sigs) {
    if (tryParseSignature(sig) === undefined) {
      throw invalid(field('Sig'), 'must be "<key name>:<base64 of a 64-byte signature>"')
    }
  }

  const ca = fields.get('CA')
  // Nix 2.8 reads an empty CA as "none" (`parseContentAddressOpt`).
  if (ca !== undefined && ca !== '') {
    checkContentAddress(ca, field('CA'))
    info.ca = ca
  }
  return info
}

/**
 * Writes `info` exactly as Nix's `NarInfo::to_string`: fixed field order, hashes as
 * `sha256:<nix32>`, References and Sigs sorted and de-duplicated (they are `std::set`s in Nix).
 * The result is parsed back, so narwhal never serves a narinfo it would refuse to accept.
 */
export function formatNarInfo (info: NarInfo): string {
  let out = `StorePath: ${info.storePath}\nURL: ${info.url}\nCompression: ${info.compression}\n`
  if (info.fileHash !== undefined) out += `FileHash: ${formatNixHash(info.fileHash)}\n`
  if (info.fileSize !== undefined) out += `FileSize: ${info.fileSize}\n`
  out += `NarHash: ${formatNixHash(info.narHash)}\nNarSize: ${info.narSize}\n`
  out += `References: ${sortedUnique(info.references).join(' ')}\n`
  if (info.deriver !== undefined) out += `Deriver: ${info.deriver}\n`
  for (const sig of sortedUnique(info.sigs)) out += `Sig: ${sig}\n`
  if (info.ca !== undefined) out += `CA: ${info.ca}\n`
  // A value containing "\n" would smuggle in extra fields; the parser catches that and every
  // other rule in one place.
  parseNarInfo(out)
  return out
}

/** Byte-wise order, as `std::set<std::string>` sorts; also removes duplicates. */
export function sortedUnique (items: readonly string[]): string[] {
  const keyed = [...new Set(items)].map(s => ({ s, key: Buffer.from(s, 'utf8') }))
  keyed.sort((a, b) => Buffer.compare(a.key, b.key))
  return keyed.map(k => k.s)
}

function parseReferences (value: string): string[] {
  // Nix tokenizes on spaces and drops empty tokens, so "References: " is the empty list.
  const refs = value.split(' ').filter(r => r !== '')
  for (const ref of refs) parseStorePathBaseName(ref, field('References'), 'NARWHAL_NARINFO_INVALID')
  return refs
}

function compressionOf (value: string | undefined): string {
  return value === undefined || value === '' ? 'bzip2' : value
}

function parseU64 (value: string, key: string): bigint {
  if (!CANONICAL_DECIMAL.test(value)) {
    throw invalid(field(key), key === 'NarSize' ? 'must be a positive decimal integer' : 'must be a decimal integer')
  }
  const n = BigInt(value)
  if (n > U64_MAX) throw invalid(field(key), 'must be at most 2^64-1')
  return n
}

function required (fields: Map<string, string>, key: string): string {
  const value = fields.get(key)
  if (value === undefined) throw invalid(field(key), 'is missing')
  return value
}

function field (key: string): string {
  return `narinfo field ${key}`
}

function invalid (where: string, rule: string): NarwhalError {
  return new NarwhalError('NARWHAL_NARINFO_INVALID', `${where}: ${rule}`)
}
