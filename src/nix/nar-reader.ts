/**
 * A streaming validator for Nix archives (NAR), the format a binary cache stores (fact sheet §4.4,
 * [2.8] `src/libutil/archive.cc`). Every token is a u64 little-endian length, the bytes, and zero
 * padding to a multiple of 8:
 *
 *   0d 00 00 00 00 00 00 00  6e 69 78 2d 61 72 63 68 69 76 65 2d 31 00 00 00   "nix-archive-1"
 *   01 00 00 00 00 00 00 00  28 00 00 00 00 00 00 00                           "("
 *   … "type" "regular" ["executable" ""] "contents" <u64 size><size bytes><pad> ")"
 *   … "type" "symlink" "target" <target> ")"
 *   … "type" "directory" { "entry" "(" "name" <name> "node" <node> ")" } ")"
 *
 * Only the canonical form that `nix-store --dump` writes is accepted: fields in that order,
 * entries strictly sorted by name (byte-wise), zero padding, nothing after the root node. The NAR
 * hash is over these exact bytes, so a lenient reader would let two different byte strings stand
 * for "the same" tree.
 *
 * Memory is constant: file contents are counted, never copied. Only small tokens are kept (names
 * up to 255 bytes, symlink targets up to 4096), and directories may nest 256 deep. Sizes are u64
 * on the wire; files up to 2^53-1 bytes (8 PiB) are accepted, so anything over 4 GiB works.
 */

import { NarwhalError } from '../errors.js'

export type NarEntry =
  /** `path` is relative to the root with `/` separators; the root itself is `''`. */
  | { path: string, type: 'regular', size: bigint, executable: boolean, narOffset: bigint }
  | { path: string, type: 'symlink', target: string }
  | { path: string, type: 'directory' }

export interface NarReaderOptions {
  /** Called for each node in NAR order (a directory before its entries). Entries seen before an
   * error are not retracted: the listing only counts once `end()` has returned. */
  onEntry?: (entry: NarEntry) => void
}

export const MAX_NAME_BYTES = 255
export const MAX_TARGET_BYTES = 4096
export const MAX_DEPTH = 256

/** What the next token must be. Each value indexes the tables below. */
const Expect = {
  Magic: 0,
  Open: 1,
  Type: 2,
  TypeValue: 3,
  RegularField: 4,
  ExecutableValue: 5,
  ContentsKeyword: 6,
  Contents: 7,
  Close: 8,
  TargetKeyword: 9,
  Target: 10,
  DirectoryField: 11,
  EntryOpen: 12,
  NameKeyword: 13,
  Name: 14,
  NodeKeyword: 15,
  EntryClose: 16,
  End: 17
} as const
type Expectation = typeof Expect[keyof typeof Expect]

/** Longest acceptable token per expectation, so a bogus length fails before any data is read. */
const MAX_TOKEN: readonly number[] = [13, 1, 4, 9, 10, 0, 8, 0, 1, 6, MAX_TARGET_BYTES, 5, 1, 4, MAX_NAME_BYTES, 4, 1, 0]

const DESCRIPTION: readonly string[] = [
  'the magic "nix-archive-1"', '"("', '"type"', 'a file type (regular, symlink or directory)',
  '"executable" or "contents"', 'the empty string after "executable"', '"contents"', 'file contents', '")"',
  '"target"', `a symlink target of 1-${MAX_TARGET_BYTES} bytes`, '"entry" or ")"', '"("', '"name"',
  `an entry name of 1-${MAX_NAME_BYTES} bytes`, '"node"', '")"', 'the end of the archive'
]

const Phase = { Length: 0, Data: 1, Skip: 2, Padding: 3, Done: 4 } as const
type ReaderPhase = typeof Phase[keyof typeof Phase]

const KW = {
  magic: Buffer.from('nix-archive-1'),
  open: Buffer.from('('),
  close: Buffer.from(')'),
  type: Buffer.from('type'),
  regular: Buffer.from('regular'),
  symlink: Buffer.from('symlink'),
  directory: Buffer.from('directory'),
  executable: Buffer.from('executable'),
  contents: Buffer.from('contents'),
  target: Buffer.from('target'),
  entry: Buffer.from('entry'),
  name: Buffer.from('name'),
  node: Buffer.from('node'),
  dot: Buffer.from('.'),
  dotDot: Buffer.from('..')
}

const TWO_POW_32 = 2 ** 32
/** High word limit that keeps hi * 2^32 + lo a safe integer. */
const MAX_SAFE_HIGH_WORD = 0x1fffff

interface DirectoryFrame {
  path: string
  /** Previous entry name, to enforce strict byte-wise order. */
  prevName: Buffer | undefined
}

export class NarReader {
  readonly #onEntry: ((entry: NarEntry) => void) | undefined

  #phase: ReaderPhase = Phase.Length
  #expect: Expectation = Expect.Magic
  /** Absolute offset of the next byte to consume. A number is exact up to 8 PiB. */
  #pos = 0
  /** Where the current token's length field started, for error messages. */
  #tokenStart = 0

  readonly #lengthBytes = Buffer.alloc(8)
  #lengthFill = 0
  readonly #token = Buffer.alloc(MAX_TARGET_BYTES)
  #tokenLength = 0
  #tokenFill = 0
  #skipLeft = 0
  #padLeft = 0

  readonly #stack: DirectoryFrame[] = []
  #path = ''
  #executable = false
  #failure: unknown = undefined
  #failed = false

  constructor (options: NarReaderOptions = {}) {
    this.#onEntry = options.onEntry
  }

  get bytesRead (): bigint {
    return BigInt(this.#pos)
  }

  write (chunk: Uint8Array): void {
    if (this.#failed) throw this.#failure
    try {
      this.#consume(chunk)
    } catch (err) {
      // The state is undefined after any throw (a callback's too), so every later call repeats it.
      this.#failed = true
      this.#failure = err
      throw err
    }
  }

  end (): void {
    if (this.#failed) throw this.#failure
    if (this.#phase !== Phase.Done) {
      this.#failed = true
      this.#failure = new NarwhalError('NARWHAL_NAR_MALFORMED',
        `NAR is truncated: it ends at byte ${this.#pos} where ${DESCRIPTION[this.#expect] ?? '?'} should be`)
      throw this.#failure
    }
  }

  #consume (chunk: Uint8Array): void {
    const n = chunk.length
    const view = new DataView(chunk.buffer, chunk.byteOffset, chunk.byteLength)
    let i = 0
    while (i < n) {
      switch (this.#phase) {
        case Phase.Skip: {
          // The hot path for large files: count, don't copy.
          const take = Math.min(n - i, this.#skipLeft)
          i += take
          this.#pos += take
          this.#skipLeft -= take
          if (this.#skipLeft === 0) this.#startPadding()
          break
        }
        case Phase.Length: {
          if (this.#lengthFill === 0 && n - i >= 8) {
            const lo = view.getUint32(i, true)
            const hi = view.getUint32(i + 4, true)
            i += 8
            this.#pos += 8
            this.#onLength(lo, hi)
          } else {
            this.#lengthBytes[this.#lengthFill++] = view.getUint8(i)
            i++
            this.#pos++
            if (this.#lengthFill === 8) {
              this.#lengthFill = 0
              this.#onLength(this.#lengthBytes.readUInt32LE(0), this.#lengthBytes.readUInt32LE(4))
            }
          }
          break
        }
        case Phase.Data: {
          const take = Math.min(n - i, this.#tokenLength - this.#tokenFill)
          this.#token.set(chunk.subarray(i, i + take), this.#tokenFill)
          i += take
          this.#pos += take
          this.#tokenFill += take
          if (this.#tokenFill === this.#tokenLength) this.#startPadding()
          break
        }
        case Phase.Padding: {
          while (this.#padLeft > 0 && i < n) {
            if (view.getUint8(i) !== 0) this.#fail(`non-zero padding byte at ${this.#pos}`)
            i++
            this.#pos++
            this.#padLeft--
          }
          if (this.#padLeft === 0) this.#tokenDone()
          break
        }
        case Phase.Done:
          this.#fail(`unexpected data after the end of the archive at byte ${this.#pos}`)
      }
    }
  }

  #onLength (lo: number, hi: number): void {
    if (this.#expect === Expect.Contents) {
      if (hi > MAX_SAFE_HIGH_WORD) this.#fail(`file at byte ${this.#tokenStart} claims more than 2^53-1 bytes`)
      const size = hi * TWO_POW_32 + lo
      this.#onEntry?.({
        path: this.#path,
        type: 'regular',
        size: BigInt(size),
        executable: this.#executable,
        narOffset: BigInt(this.#pos)
      })
      this.#tokenLength = size
      if (size === 0) {
        this.#startPadding()
      } else {
        this.#phase = Phase.Skip
        this.#skipLeft = size
      }
      return
    }
    const max = MAX_TOKEN[this.#expect] ?? 0
    if (hi !== 0 || lo > max) {
      const length = hi * TWO_POW_32 + lo
      if (this.#expect === Expect.Magic) this.#fail('not a Nix archive: it does not start with "nix-archive-1"')
      this.#fail(`expected ${DESCRIPTION[this.#expect] ?? '?'} at byte ${this.#tokenStart}, found a string of ${length} bytes`)
    }
    this.#tokenLength = lo
    this.#tokenFill = 0
    if (lo === 0) {
      this.#startPadding()
    } else {
      this.#phase = Phase.Data
    }
  }

  #startPadding (): void {
    this.#padLeft = (8 - (this.#tokenLength % 8)) % 8
    if (this.#padLeft === 0) {
      this.#tokenDone()
    } else {
      this.#phase = Phase.Padding
    }
  }

  #tokenDone (): void {
    this.#phase = Phase.Length
    if (this.#expect === Expect.Contents) {
      this.#expect = Expect.Close
    } else {
      this.#onToken(this.#token.subarray(0, this.#tokenLength))
    }
    this.#tokenStart = this.#pos
  }

  #onToken (token: Buffer): void {
    switch (this.#expect) {
      case Expect.Magic:
        if (!token.equals(KW.magic)) this.#fail('not a Nix archive: it does not start with "nix-archive-1"')
        this.#expect = Expect.Open
        return
      case Expect.Open:
        this.#keyword(token, KW.open, Expect.Type)
        return
      case Expect.Type:
        this.#keyword(token, KW.type, Expect.TypeValue)
        return
      case Expect.TypeValue:
        this.#onType(token)
        return
      case Expect.RegularField:
        if (token.equals(KW.executable)) {
          this.#expect = Expect.ExecutableValue
        } else {
          this.#keyword(token, KW.contents, Expect.Contents)
        }
        return
      case Expect.ExecutableValue:
        // MAX_TOKEN is 0 here, so the token is the empty string.
        this.#executable = true
        this.#expect = Expect.ContentsKeyword
        return
      case Expect.ContentsKeyword:
        this.#keyword(token, KW.contents, Expect.Contents)
        return
      case Expect.Close:
        this.#keyword(token, KW.close, Expect.Close)
        this.#nodeClosed()
        return
      case Expect.TargetKeyword:
        this.#keyword(token, KW.target, Expect.Target)
        return
      case Expect.Target:
        // No file system can hold an empty target or one with NUL; Nix could not restore it.
        if (token.length === 0 || token.includes(0)) this.#unexpected()
        this.#onEntry?.({ path: this.#path, type: 'symlink', target: token.toString('utf8') })
        this.#expect = Expect.Close
        return
      case Expect.DirectoryField:
        if (token.equals(KW.entry)) {
          this.#expect = Expect.EntryOpen
        } else {
          this.#keyword(token, KW.close, Expect.DirectoryField)
          this.#stack.pop()
          this.#nodeClosed()
        }
        return
      case Expect.EntryOpen:
        this.#keyword(token, KW.open, Expect.NameKeyword)
        return
      case Expect.NameKeyword:
        this.#keyword(token, KW.name, Expect.Name)
        return
      case Expect.Name:
        this.#onName(token)
        return
      case Expect.NodeKeyword:
        this.#keyword(token, KW.node, Expect.Open)
        return
      case Expect.EntryClose:
        this.#keyword(token, KW.close, Expect.DirectoryField)
        return
      default:
        this.#unexpected()
    }
  }

  /** A node's type: what the tokens after it must be. */
  #onType (type: Buffer): void {
    if (type.equals(KW.regular)) {
      this.#executable = false
      this.#expect = Expect.RegularField
    } else if (type.equals(KW.symlink)) {
      this.#expect = Expect.TargetKeyword
    } else if (type.equals(KW.directory)) {
      if (this.#stack.length >= MAX_DEPTH) this.#fail(`directories nest deeper than ${MAX_DEPTH} at byte ${this.#tokenStart}`)
      this.#onEntry?.({ path: this.#path, type: 'directory' })
      this.#stack.push({ path: this.#path, prevName: undefined })
      this.#expect = Expect.DirectoryField
    } else {
      this.#unexpected()
    }
  }

  #onName (name: Buffer): void {
    const dir = this.#stack.at(-1)
    if (dir === undefined) return this.#unexpected()
    if (name.length === 0 || name.equals(KW.dot) || name.equals(KW.dotDot) || name.includes(0x2f) || name.includes(0)) {
      this.#fail(`invalid entry name at byte ${this.#tokenStart}: empty, ".", "..", or contains "/" or NUL`)
    }
    if (dir.prevName !== undefined && Buffer.compare(name, dir.prevName) <= 0) {
      this.#fail(`directory entries are not strictly sorted by name at byte ${this.#tokenStart}`)
    }
    dir.prevName = Buffer.from(name)
    const decoded = name.toString('utf8')
    this.#path = dir.path === '' ? decoded : `${dir.path}/${decoded}`
    this.#expect = Expect.NodeKeyword
  }

  #nodeClosed (): void {
    const dir = this.#stack.at(-1)
    if (dir === undefined) {
      this.#expect = Expect.End
      this.#phase = Phase.Done
    } else {
      this.#expect = Expect.EntryClose
      this.#path = dir.path
    }
  }

  #keyword (token: Buffer, keyword: Buffer, next: Expectation): void {
    if (!token.equals(keyword)) this.#unexpected()
    this.#expect = next
  }

  #unexpected (): never {
    return this.#fail(`expected ${DESCRIPTION[this.#expect] ?? '?'} at byte ${this.#tokenStart}`)
  }

  #fail (reason: string): never {
    throw new NarwhalError('NARWHAL_NAR_MALFORMED', `malformed NAR: ${reason}`)
  }
}
