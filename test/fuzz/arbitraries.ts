/**
 * Generators shared by the fuzz tests: valid narinfos (as values and as the many ways Nix lets
 * one be spelled), random file trees and their NARs, and byte-level mutations with random chunk
 * boundaries. Valid inputs are built from the protocol's rules, so a property can say exactly
 * what must be accepted; mutations of them reach deep into the parsers, where purely random
 * bytes would be refused at the first token.
 */
import fc from 'fast-check'
import { HASH_SIZES, type HashAlgorithm } from '../../src/nix/hash.js'
import { sortedUnique, type NarInfo } from '../../src/nix/narinfo.js'
import { NIX32_ALPHABET, encodeNix32 } from '../../src/nix/nix32.js'
import { MAX_NAME_LENGTH, STORE_DIR, isValidStorePathName } from '../../src/nix/store-path.js'
import { nar } from '../unit/nix-test-helpers.js'

// ---------------------------------------------------------------------------------------------
// Bytes

/**
 * `length` pseudo-random bytes from `seed` (xorshift32). fast-check builds a uint8Array element
 * by element, about 70 ms for 64 KiB; large bodies only need to be arbitrary, not shrinkable.
 */
export function seededBytes (length: number, seed: number): Buffer {
  const out = Buffer.alloc(length)
  let x = (seed | 0) || 0x9e3779b9
  for (let i = 0; i < length; i++) {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    out[i] = x & 0xff
  }
  return out
}

/** Arbitrary bytes, cheap at any size: small ones from fast-check, large ones seeded. */
export function bytes (minLength: number, maxLength: number): fc.Arbitrary<Buffer> {
  if (maxLength <= 256) return fc.uint8Array({ minLength, maxLength }).map(b => Buffer.from(b))
  return fc.tuple(fc.integer({ min: minLength, max: maxLength }), fc.integer()).map(([n, seed]) => seededBytes(n, seed))
}

// ---------------------------------------------------------------------------------------------
// Names and hashes

export function nix32String (length: number): fc.Arbitrary<string> {
  return fc.string({ unit: fc.constantFrom(...NIX32_ALPHABET), minLength: length, maxLength: length })
}

export const hashPart = nix32String(32)

export const sha256Bytes: fc.Arbitrary<Buffer> = fc.uint8Array({ minLength: 32, maxLength: 32 }).map(b => Buffer.from(b))

const NAME_CHARS = '0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ+-._?='

/** A store path name: mostly short, sometimes at the 211-character limit. */
export const storePathName: fc.Arbitrary<string> = fc.oneof(
  { weight: 5, arbitrary: fc.string({ unit: fc.constantFrom(...NAME_CHARS), minLength: 1, maxLength: 20 }) },
  { weight: 1, arbitrary: fc.string({ unit: fc.constantFrom(...NAME_CHARS), minLength: MAX_NAME_LENGTH - 3, maxLength: MAX_NAME_LENGTH }) }
).filter(isValidStorePathName)

export const baseName: fc.Arbitrary<string> = fc.tuple(hashPart, storePathName).map(([h, n]) => `${h}-${n}`)

export const drvBaseName: fc.Arbitrary<string> = fc.tuple(hashPart, storePathName)
  .map(([h, n]) => `${h}-${n.slice(0, MAX_NAME_LENGTH - 4)}.drv`)
  .filter(b => isValidStorePathName(b.slice(33)))

/** A line value: anything but the line separators. */
export function lineValue (minLength: number, maxLength = 40): fc.Arbitrary<string> {
  return fc.string({ unit: 'binary', minLength, maxLength }).map(s => s.replace(/[\n\r]/g, '_'))
    .filter(s => s.length >= minLength)
}

/** `name:base64(64 bytes)`: a well-formed Sig, whether or not any key made it. */
export const sigString: fc.Arbitrary<string> = fc.tuple(
  lineValue(1, 20).map(s => s.replace(/:/g, '-')),
  fc.uint8Array({ minLength: 64, maxLength: 64 })
).map(([name, bytes]) => `${name}:${Buffer.from(bytes).toString('base64')}`)

type HashSpelling = 'nix32' | 'hex' | 'HEX' | 'base64' | 'sri' | 'sri-unpadded'

const hashSpelling = fc.constantFrom<HashSpelling>('nix32', 'hex', 'HEX', 'base64', 'sri', 'sri-unpadded')

/** One of the ways Nix accepts a SHA-256 in a narinfo (src/nix/hash.ts). */
export function spellHash (bytes: Buffer, spelling: HashSpelling): string {
  switch (spelling) {
    case 'nix32': return `sha256:${encodeNix32(bytes)}`
    case 'hex': return `sha256:${bytes.toString('hex')}`
    case 'HEX': return `sha256:${bytes.toString('hex').toUpperCase()}`
    case 'base64': return `sha256:${bytes.toString('base64')}`
    case 'sri': return `sha256-${bytes.toString('base64')}`
    case 'sri-unpadded': return `sha256-${bytes.toString('base64').replace(/=+$/, '')}`
  }
}

/** A CA field Nix 2.8 parses (src/nix/content-address.ts), in any of its hash encodings. */
export const contentAddress: fc.Arbitrary<string> = fc.tuple(
  fc.constantFrom('text:', 'fixed:r:', 'fixed:'),
  fc.constantFrom<HashAlgorithm>('md5', 'sha1', 'sha256', 'sha512'),
  fc.constantFrom('hex', 'nix32', 'base64'),
  fc.uint8Array({ minLength: 64, maxLength: 64 })
).map(([prefix, algo, encoding, random]) => {
  const a = prefix === 'text:' ? 'sha256' : algo
  const bytes = Buffer.from(random.subarray(0, HASH_SIZES[a]))
  const body = encoding === 'hex' ? bytes.toString('hex') : encoding === 'nix32' ? encodeNix32(bytes) : bytes.toString('base64')
  return `${prefix}${a}:${body}`
})

const U64_MAX = (1n << 64n) - 1n

/**
 * A NarInfo that `formatNarInfo` writes and `parseNarInfo` reads back unchanged: references and
 * sigs already sorted and unique (Nix keeps them in sets), a non-empty Compression (an empty one
 * reads back as "bzip2").
 */
export const narInfoValue: fc.Arbitrary<NarInfo> = fc.record({
  baseName,
  url: lineValue(1),
  compression: fc.oneof(fc.constantFrom('xz', 'zstd', 'bzip2', 'none', 'br', 'gzip'), lineValue(1, 10)),
  fileHash: fc.option(sha256Bytes, { nil: undefined }),
  fileSize: fc.option(fc.bigInt({ min: 0n, max: U64_MAX }), { nil: undefined }),
  narHash: sha256Bytes,
  narSize: fc.oneof(fc.bigInt({ min: 1n, max: 1n << 32n }), fc.bigInt({ min: 1n, max: U64_MAX })),
  references: fc.array(baseName, { maxLength: 6 }),
  deriver: fc.option(drvBaseName, { nil: undefined }),
  sigs: fc.array(sigString, { maxLength: 4 }),
  ca: fc.option(contentAddress, { nil: undefined })
}, { requiredKeys: ['baseName', 'url', 'compression', 'narHash', 'narSize', 'references', 'sigs'] }).map(r => {
  const info: NarInfo = {
    storePath: `${STORE_DIR}/${r.baseName}`,
    url: r.url,
    compression: r.compression,
    narHash: r.narHash,
    narSize: r.narSize,
    references: sortedUnique(r.references),
    sigs: sortedUnique(r.sigs)
  }
  if (r.fileHash !== undefined) info.fileHash = r.fileHash
  if (r.fileSize !== undefined) info.fileSize = r.fileSize
  if (r.deriver !== undefined) info.deriver = r.deriver
  if (r.ca !== undefined) info.ca = r.ca
  return info
})

/**
 * The same NarInfo written the many ways Nix reads it: fields in any order, hashes in any
 * encoding, references unsorted and repeated with extra spaces, optional fields spelled as their
 * defaults, repeated Sig lines and unknown keys (which Nix ignores).
 */
export function spelledNarInfo (info: NarInfo): fc.Arbitrary<string> {
  return fc.record({
    order: fc.func(fc.double({ noNaN: true })),
    narHashSpelling: hashSpelling,
    fileHashSpelling: hashSpelling,
    refOrder: fc.shuffledSubarray(info.references, { minLength: info.references.length }),
    refRepeats: fc.array(fc.constantFrom(...info.references, ''), { maxLength: 2 }),
    refSeparators: fc.array(fc.constantFrom(' ', '  ', '   '), { minLength: 8, maxLength: 8 }),
    refsLeadingSpace: fc.boolean(),
    omitEmptyReferences: fc.boolean(),
    sigOrder: fc.shuffledSubarray(info.sigs, { minLength: info.sigs.length }),
    sigRepeats: fc.array(fc.constantFrom(...info.sigs, ...(info.sigs.length === 0 ? [undefined] : [])), { maxLength: 2 }),
    bzip2Spelling: fc.constantFrom('as is', 'omitted', 'empty'),
    writeUnknownDeriver: fc.boolean(),
    writeEmptyCa: fc.boolean(),
    unknown: fc.array(fc.tuple(fc.constantFrom('System', 'Foo', 'X-Custom', 'storepath', 'Narhash'), lineValue(0)), { maxLength: 3 })
  }).map(s => {
    const lines: string[] = [`StorePath: ${info.storePath}`, `URL: ${info.url}`]
    if (info.compression !== 'bzip2' || s.bzip2Spelling === 'as is') lines.push(`Compression: ${info.compression}`)
    else if (s.bzip2Spelling === 'empty') lines.push('Compression: ')
    if (info.fileHash !== undefined) lines.push(`FileHash: ${spellHash(info.fileHash, s.fileHashSpelling)}`)
    if (info.fileSize !== undefined) lines.push(`FileSize: ${info.fileSize}`)
    lines.push(`NarHash: ${spellHash(info.narHash, s.narHashSpelling)}`, `NarSize: ${info.narSize}`)
    const refs = [...s.refOrder, ...s.refRepeats]
    if (refs.length > 0 || !s.omitEmptyReferences) {
      let value = s.refsLeadingSpace ? ' ' : ''
      refs.forEach((ref, i) => { value += ref + (s.refSeparators[i % s.refSeparators.length] ?? ' ') })
      lines.push(`References: ${value}`)
    }
    if (info.deriver !== undefined) lines.push(`Deriver: ${info.deriver}`)
    else if (s.writeUnknownDeriver) lines.push('Deriver: unknown-deriver')
    for (const sig of [...s.sigOrder, ...s.sigRepeats]) if (sig !== undefined) lines.push(`Sig: ${sig}`)
    if (info.ca !== undefined) lines.push(`CA: ${info.ca}`)
    else if (s.writeEmptyCa) lines.push('CA: ')
    for (const [key, value] of s.unknown) lines.push(`${key}: ${value}`)
    const keyed = lines.map((line, i) => ({ line, key: s.order(i) }))
    keyed.sort((a, b) => a.key - b.key)
    return keyed.map(k => k.line).join('\n') + '\n'
  })
}

// ---------------------------------------------------------------------------------------------
// Damaged narinfos

/** Values that break number, hash and path rules in the ways an attacker or a bug would. */
export const hostileValue = fc.oneof(
  fc.constantFrom('', ' ', '0', '00', '01', '-1', '+1', '1e3', '0x10', '1.0', ' 1', '1 ', '١٢٣',
    '18446744073709551615', '18446744073709551616', '99999999999999999999', '999999999999999999999999999999',
    'sha256:', 'sha256-', 'sha512:' + 'a'.repeat(128), 'sha256:' + 'A'.repeat(64), 'sha256:' + '0'.repeat(52),
    'sha256:' + 'z'.repeat(52), 'md5:' + '0'.repeat(32), '/nix/store/', '/nix/store/../etc/passwd',
    'unknown-deriver', 'text:sha256:', 'fixed:r:sha256:' + '0'.repeat(52), '\u0000', '\u2028', 'é', '🦭', 'x:y:z'),
  lineValue(0, 60),
  fc.string({ unit: 'grapheme', maxLength: 30 }),
  fc.constant('x'.repeat(70_000)),
  baseName,
  sigString
)

export const KEYS = ['StorePath', 'URL', 'Compression', 'FileHash', 'FileSize', 'NarHash', 'NarSize', 'References', 'Deriver', 'Sig', 'CA', 'System']

/** Line-level damage to a narinfo text; positions are taken modulo the number of lines. */
export type LineMutation =
  | { kind: 'drop', at: number }
  | { kind: 'duplicate', at: number }
  | { kind: 'swap', a: number, b: number }
  | { kind: 'value', at: number, value: string }
  | { kind: 'add', at: number, key: string, separator: string, value: string }
  | { kind: 'key-case', at: number }
  | { kind: 'separator', at: number, separator: string }

export const lineMutation: fc.Arbitrary<LineMutation> = fc.oneof(
  fc.record({ kind: fc.constant('drop' as const), at: fc.nat() }),
  fc.record({ kind: fc.constant('duplicate' as const), at: fc.nat() }),
  fc.record({ kind: fc.constant('swap' as const), a: fc.nat(), b: fc.nat() }),
  fc.record({ kind: fc.constant('value' as const), at: fc.nat(), value: hostileValue }),
  fc.record({
    kind: fc.constant('add' as const),
    at: fc.nat(),
    key: fc.oneof(fc.constantFrom(...KEYS), lineValue(0, 10)),
    separator: fc.constantFrom(': ', ':', ' : ', ':  ', ':\t', ''),
    value: hostileValue
  }),
  fc.record({ kind: fc.constant('key-case' as const), at: fc.nat() }),
  fc.record({ kind: fc.constant('separator' as const), at: fc.nat(), separator: fc.constantFrom(':', ' : ', ':\t', '=', ': : ') })
)

export function mutateLines (text: string, mutations: readonly LineMutation[]): string {
  const lines = text.split('\n').slice(0, -1)
  for (const m of mutations) {
    const n = lines.length
    if (n === 0 && m.kind !== 'add') continue
    switch (m.kind) {
      case 'drop': lines.splice(m.at % n, 1); break
      case 'duplicate': lines.splice(m.at % n, 0, lines[m.at % n] ?? ''); break
      case 'swap': {
        const a = m.a % n
        const b = m.b % n
        const la = lines[a] ?? ''
        lines[a] = lines[b] ?? ''
        lines[b] = la
        break
      }
      case 'value': {
        const line = lines[m.at % n] ?? ''
        const colon = line.indexOf(':')
        lines[m.at % n] = `${colon < 0 ? line : line.slice(0, colon)}: ${m.value}`
        break
      }
      case 'add': lines.splice(m.at % (n + 1), 0, `${m.key}${m.separator}${m.value}`); break
      case 'key-case': {
        const line = lines[m.at % n] ?? ''
        lines[m.at % n] = line === line.toLowerCase() ? line.toUpperCase() : line.toLowerCase()
        break
      }
      case 'separator': lines[m.at % n] = (lines[m.at % n] ?? '').replace(': ', m.separator); break
    }
  }
  return lines.join('\n') + '\n'
}

/** Text-level damage: line endings, stray characters, truncation. */
export type TextMutation =
  | { kind: 'crlf' }
  | { kind: 'cr', at: number }
  | { kind: 'insert', at: number, text: string }
  | { kind: 'truncate', at: number }
  | { kind: 'no-final-newline' }
  | { kind: 'blank-line', at: number }

export const textMutation: fc.Arbitrary<TextMutation> = fc.oneof(
  fc.constant({ kind: 'crlf' as const }),
  fc.record({ kind: fc.constant('cr' as const), at: fc.nat() }),
  fc.record({ kind: fc.constant('insert' as const), at: fc.nat(), text: fc.string({ unit: 'binary', minLength: 1, maxLength: 4 }) }),
  fc.record({ kind: fc.constant('truncate' as const), at: fc.nat() }),
  fc.constant({ kind: 'no-final-newline' as const }),
  fc.record({ kind: fc.constant('blank-line' as const), at: fc.nat() })
)

export function mutateText (text: string, m: TextMutation): string {
  const at = (n: number): number => n % (text.length + 1)
  switch (m.kind) {
    case 'crlf': return text.replace(/\n/g, '\r\n')
    case 'cr': return text.slice(0, at(m.at)) + '\r' + text.slice(at(m.at))
    case 'insert': return text.slice(0, at(m.at)) + m.text + text.slice(at(m.at))
    case 'truncate': return text.slice(0, at(m.at))
    case 'no-final-newline': return text.replace(/\n$/, '')
    case 'blank-line': {
      const i = text.indexOf('\n', at(m.at))
      return i < 0 ? text + '\n' : text.slice(0, i + 1) + '\n' + text.slice(i + 1)
    }
  }
}

// ---------------------------------------------------------------------------------------------
// File trees and NARs

/** A file system object as a NAR describes it. Names and targets are bytes, as on the wire. */
export type NarTree =
  | { type: 'regular', contents: Buffer, executable: boolean }
  | { type: 'symlink', target: Buffer }
  | { type: 'directory', entries: Array<[Buffer, NarTree]> }

/** A directory entry name: 1-255 bytes, no "/" or NUL, not "." or "..". Mostly short. */
export const entryName: fc.Arbitrary<Buffer> = fc.oneof(
  { weight: 6, arbitrary: fc.string({ unit: 'grapheme-ascii', minLength: 1, maxLength: 8 }) },
  { weight: 3, arbitrary: fc.string({ unit: 'binary', minLength: 1, maxLength: 8 }) },
  { weight: 1, arbitrary: fc.string({ unit: 'grapheme-ascii', minLength: 250, maxLength: 255 }) }
).map(s => Buffer.from(s.replace(/[/\0]/g, '_'), 'utf8'))
  .filter(b => b.length >= 1 && b.length <= 255 && b.toString() !== '.' && b.toString() !== '..')

const contents: fc.Arbitrary<Buffer> = fc.oneof(
  { weight: 8, arbitrary: bytes(0, 40) },
  { weight: 1, arbitrary: bytes(1000, 5000) }
)

/** A symlink target: 1-4096 bytes without NUL. */
const target: fc.Arbitrary<Buffer> = fc.oneof(
  { weight: 8, arbitrary: fc.string({ unit: 'binary', minLength: 1, maxLength: 30 }) },
  { weight: 1, arbitrary: fc.tuple(fc.integer({ min: 4090, max: 4096 }), fc.integer()).map(([n, seed]) => Buffer.from(seededBytes(n, seed).map(b => 0x21 + (b % 94))).toString('latin1')) }
).map(s => Buffer.from(s.replace(/\0/g, '_'), 'utf8'))
  .filter(b => b.length >= 1 && b.length <= 4096)

function sortedEntries (entries: Array<[Buffer, NarTree]>): Array<[Buffer, NarTree]> {
  return [...entries].sort((a, b) => Buffer.compare(a[0], b[0]))
}

/** Random trees of regular files, executables, symlinks and directories, a few levels deep. */
export const narTree: fc.Arbitrary<NarTree> = fc.letrec<{ node: NarTree, directory: NarTree }>(tie => ({
  node: fc.oneof({ maxDepth: 4, depthIdentifier: 'nar-tree' },
    fc.record({ type: fc.constant('regular' as const), contents, executable: fc.boolean() }),
    fc.record({ type: fc.constant('symlink' as const), target }),
    tie('directory')),
  directory: fc.uniqueArray(fc.tuple(entryName, tie('node')), { maxLength: 5, selector: e => e[0].toString('hex') })
    .map(entries => ({ type: 'directory' as const, entries: sortedEntries(entries) }))
})).node

/** A chain of directories around MAX_DEPTH (256): the deepest ones must be refused. */
export const deepTree: fc.Arbitrary<NarTree> = fc.integer({ min: 250, max: 260 }).map(depth => {
  let node: NarTree = { type: 'regular', contents: Buffer.from('x'), executable: false }
  for (let i = 0; i < depth; i++) node = { type: 'directory', entries: [[Buffer.from('d'), node]] }
  return node
})

/** The NAR of `tree`, as `nix-store --dump` writes it (entries in the order given). */
export const narOf: (tree: NarTree) => Buffer = nar

// ---------------------------------------------------------------------------------------------
// Byte mutations and chunking

export type ByteMutation =
  | { kind: 'flip', at: number, bit: number }
  | { kind: 'set', at: number, value: number }
  | { kind: 'insert', at: number, bytes: Uint8Array }
  | { kind: 'delete', at: number, length: number }
  | { kind: 'truncate', at: number }
  | { kind: 'length-word', at: number, value: bigint }
  | { kind: 'duplicate', at: number, length: number }
  | { kind: 'swap-words', a: number, b: number }

const u64Value = fc.oneof(
  fc.bigInt({ min: 0n, max: 16n }),
  fc.bigInt({ min: 0n, max: 5000n }),
  fc.constantFrom(255n, 256n, 4096n, 4097n, (1n << 32n) - 1n, 1n << 32n, (1n << 53n) - 1n, 1n << 53n, (1n << 64n) - 1n),
  fc.bigInt({ min: 0n, max: (1n << 64n) - 1n })
)

/** A position, taken modulo a length later: fast-check's bias favours the start, noBias does not. */
const position = fc.oneof({ weight: 1, arbitrary: fc.nat() }, { weight: 4, arbitrary: fc.noBias(fc.nat()) })

export const byteMutation: fc.Arbitrary<ByteMutation> = fc.oneof(
  fc.record({ kind: fc.constant('flip' as const), at: position, bit: fc.integer({ min: 0, max: 7 }) }),
  fc.record({ kind: fc.constant('set' as const), at: position, value: fc.integer({ min: 0, max: 255 }) }),
  fc.record({ kind: fc.constant('insert' as const), at: position, bytes: fc.uint8Array({ minLength: 1, maxLength: 16 }) }),
  fc.record({ kind: fc.constant('delete' as const), at: position, length: fc.integer({ min: 1, max: 24 }) }),
  fc.record({ kind: fc.constant('truncate' as const), at: position }),
  fc.record({ kind: fc.constant('length-word' as const), at: position, value: u64Value }),
  fc.record({ kind: fc.constant('duplicate' as const), at: position, length: fc.integer({ min: 1, max: 64 }) }),
  fc.record({ kind: fc.constant('swap-words' as const), a: position, b: position })
)

/** Applies one mutation; positions are taken modulo the current length, words are 8-aligned. */
export function mutate (bytes: Buffer, m: ByteMutation): Buffer {
  const n = bytes.length
  const words = Math.floor(n / 8)
  switch (m.kind) {
    case 'flip': {
      if (n === 0) return bytes
      const out = Buffer.from(bytes)
      const i = m.at % n
      out[i] = (out[i] ?? 0) ^ (1 << m.bit)
      return out
    }
    case 'set': {
      if (n === 0) return bytes
      const out = Buffer.from(bytes)
      out[m.at % n] = m.value
      return out
    }
    case 'insert': {
      const i = m.at % (n + 1)
      return Buffer.concat([bytes.subarray(0, i), m.bytes, bytes.subarray(i)])
    }
    case 'delete': {
      if (n === 0) return bytes
      const i = m.at % n
      return Buffer.concat([bytes.subarray(0, i), bytes.subarray(i + m.length)])
    }
    case 'truncate':
      return bytes.subarray(0, m.at % (n + 1))
    case 'length-word': {
      if (words === 0) return bytes
      const out = Buffer.from(bytes)
      out.writeBigUInt64LE(m.value, (m.at % words) * 8)
      return out
    }
    case 'duplicate': {
      if (n === 0) return bytes
      const i = m.at % n
      const piece = bytes.subarray(i, i + m.length)
      return Buffer.concat([bytes.subarray(0, i), piece, bytes.subarray(i)])
    }
    case 'swap-words': {
      if (words < 2) return bytes
      const out = Buffer.from(bytes)
      const a = (m.a % words) * 8
      const b = (m.b % words) * 8
      bytes.copy(out, a, b, b + 8)
      bytes.copy(out, b, a, a + 8)
      return out
    }
  }
}

export function mutateAll (bytes: Buffer, mutations: readonly ByteMutation[]): Buffer {
  return mutations.reduce(mutate, bytes)
}

/** Where to cut a body into chunks: random cut points, or one byte at a time. */
export type Chunking = { kind: 'cuts', cuts: number[] } | { kind: 'bytewise' }

export const chunking: fc.Arbitrary<Chunking> = fc.oneof(
  { weight: 9, arbitrary: fc.record({ kind: fc.constant('cuts' as const), cuts: fc.array(position, { maxLength: 12 }) }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'bytewise' as const }) }
)

/** `bytes` cut into chunks, none empty, that concatenate back to `bytes`. */
export function chunksOf (bytes: Buffer, how: Chunking): Buffer[] {
  if (bytes.length === 0) return []
  if (how.kind === 'bytewise') return Array.from({ length: bytes.length }, (_, i) => bytes.subarray(i, i + 1))
  const cuts = [...new Set(how.cuts.map(c => c % bytes.length))].filter(c => c > 0).sort((a, b) => a - b)
  const chunks: Buffer[] = []
  let start = 0
  for (const cut of [...cuts, bytes.length]) {
    chunks.push(bytes.subarray(start, cut))
    start = cut
  }
  return chunks
}
