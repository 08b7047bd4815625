/**
 * Compression methods of NAR files: their narinfo names, their file extensions and how to tell
 * them apart from the first bytes of a body.
 *
 * Nix names a NAR `nar/<filehash>.nar<ext>`, but the extension is not a reliable guide: gzip,
 * lzma and "none" all get a bare `.nar` (protocol fact sheet §4.1). The server therefore detects
 * the method from the bytes and checks that the narinfo's `Compression` field tells the truth,
 * because Nix 2.22+ decompresses with the named filter only.
 *
 *   fd 37 7a 58 5a 00  xz        28 b5 2f fd  zstd      42 5a 68 ("BZh")  bzip2
 *   1f 8b              gzip      04 22 4d 18  lz4       4c 5a 49 50 ("LZIP")  lzip
 *   0d 00 … "nix-archive-1"  none (a bare NAR)   brotli has no magic number at all.
 */

/** Methods narwhal can decompress, and so verify. */
export const VERIFIABLE_COMPRESSIONS = ['none', 'xz', 'zstd', 'bzip2', 'gzip', 'br'] as const
export type Compression = typeof VERIFIABLE_COMPRESSIONS[number]

/** What the first bytes say: a verifiable method, one we recognise but cannot verify, or nothing. */
export type DetectedCompression = Compression | 'lz4' | 'lzip' | 'unknown'

/** Extensions Nix gives NAR files (`compression-algo.hh`), used to validate URL names. */
export const NAR_EXTENSIONS = ['.xz', '.bz2', '.zst', '.lzip', '.lz4', '.br'] as const

/** Regular-expression source for the optional extension after `.nar` in a NAR file name. */
export const NAR_EXTENSION_PATTERN = `(${NAR_EXTENSIONS.map(e => '\\' + e).join('|')})?`

/** The extension Nix writes for a method; everything not listed gets none. */
export function extensionFor (compression: string): string {
  switch (compression) {
    case 'xz': return '.xz'
    case 'bzip2': return '.bz2'
    case 'zstd': return '.zst'
    case 'lzip': return '.lzip'
    case 'lz4': return '.lz4'
    case 'br': return '.br'
    default: return ''
  }
}

const NAR_MAGIC = Buffer.concat([Buffer.from([13, 0, 0, 0, 0, 0, 0, 0]), Buffer.from('nix-archive-1')])

function startsWith (head: Uint8Array, magic: number[]): boolean {
  if (head.length < magic.length) return false
  return magic.every((byte, i) => head[i] === byte)
}

/** Bytes needed by detectCompression to decide. */
export const DETECTION_BYTES = NAR_MAGIC.length

/**
 * Detects the compression of a NAR body from its first bytes. Brotli streams carry no magic
 * number, so anything unrecognised is reported as 'unknown' and the caller tries brotli.
 */
export function detectCompression (head: Uint8Array): DetectedCompression {
  if (startsWith(head, [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00])) return 'xz'
  if (startsWith(head, [0x28, 0xb5, 0x2f, 0xfd])) return 'zstd'
  if (startsWith(head, [0x42, 0x5a, 0x68])) return 'bzip2'
  if (startsWith(head, [0x1f, 0x8b])) return 'gzip'
  if (startsWith(head, [0x04, 0x22, 0x4d, 0x18])) return 'lz4'
  if (startsWith(head, [0x4c, 0x5a, 0x49, 0x50])) return 'lzip'
  if (startsWith(head, [...NAR_MAGIC])) return 'none'
  return 'unknown'
}

/**
 * How Nix reads the narinfo `Compression` field: a missing or empty value means bzip2
 * (`nar-info.cc`), so a narinfo without the field claims a bzip2 NAR.
 */
export function normaliseCompressionField (value: string | undefined): string {
  return value === undefined || value === '' ? 'bzip2' : value
}
