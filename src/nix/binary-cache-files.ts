/**
 * The files of a Nix binary cache by the names Nix asks for, and what each is: the layout both
 * narwhal's HTTP routes and a bucket written for stock Nix (`narwhal export`) follow.
 *
 *   nix-cache-info                 StoreDir, WantMassQuery, Priority
 *   <hash32>.narinfo               one per store path; its URL field names its NAR
 *   nar/<filehash52>.nar[.ext]     the NARs
 *   log/<drv base name>, <hash32>.ls, realisations/…, build-trace-v2/…, debuginfo/<build id>
 */
import { STORE_DIR } from './store-path.js'

export const CACHE_INFO_FILE = 'nix-cache-info'

export const CONTENT_TYPE = {
  cacheInfo: 'text/x-nix-cache-info',
  narinfo: 'text/x-nix-narinfo',
  nar: 'application/x-nix-nar'
} as const

/** What `nix-cache-info` says: Nix 2.8 caches it forever, so it must be right the first time. */
export function cacheInfoText (priority: number): string {
  return `StoreDir: ${STORE_DIR}\nWantMassQuery: 1\nPriority: ${priority}\n`
}

export function narinfoFile (hashPart: string): string {
  return `${hashPart}.narinfo`
}

/** The kinds of small files besides narinfos and NARs (db/metadata.ts stores them by kind and name). */
export type AuxFileKind = 'log' | 'ls' | 'realisation' | 'debuginfo'

/**
 * The cache path of a small file from its stored kind and name (the names the routes of
 * server/routes/aux-files.ts store: a realisation of Nix 2.35+ keeps its build-trace-v2/ folder
 * in its name, the older ones live under realisations/).
 */
export function auxFilePath (kind: AuxFileKind, name: string): string {
  switch (kind) {
    case 'log': return `log/${name}`
    case 'ls': return `${name}.ls`
    case 'realisation': return name.startsWith('build-trace-v2/') ? name : `realisations/${name}`
    case 'debuginfo': return `debuginfo/${name}`
  }
}
