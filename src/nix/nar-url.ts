/**
 * Where a NAR file lives in a binary cache, relative to the cache's root:
 *
 *   nar/1xsjkazpfgyyy38br89kz2plvdb4dkqcjl5mh0n2py3ndf0sc48j.nar.xz
 *       └─ FileHash, 52 chars of nix32 ─────────────────────┘    └─ extension Nix gives the method
 *
 * The one pattern for every place that reads or writes such a name: the NAR route and the fast
 * path of the server, the parts of a batch upload, a narinfo's URL field, and the pusher.
 */
import { extensionFor, NAR_EXTENSION_PATTERN } from './compression.js'
import { FILE_HASH_PATTERN } from './store-path.js'

/** Regular-expression source for `<filehash>.nar[.ext]`: group 1 the file hash, group 2 the extension. */
export const NAR_FILE_PATTERN = `(${FILE_HASH_PATTERN})\\.nar${NAR_EXTENSION_PATTERN}`

const NAR_URL = new RegExp(`^nar/${NAR_FILE_PATTERN}$`)

export interface NarUrl {
  fileHash: string
  /** `.xz`, `.zst`, …, or '' for a bare `.nar`. */
  extension: string
}

/** Parses `nar/<filehash>.nar[.ext]`; undefined for anything else. */
export function parseNarUrl (url: string): NarUrl | undefined {
  const match = NAR_URL.exec(url)
  return match === null ? undefined : { fileHash: match[1] ?? '', extension: match[2] ?? '' }
}

/** The name Nix gives the file of `fileHash` compressed with `compression`. */
export function narUrl (fileHash: string, compression: string): string {
  return `nar/${fileHash}.nar${extensionFor(compression)}`
}
