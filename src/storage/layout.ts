/**
 * Where things live under the data folder. File names come only from validated nix32 hashes,
 * never from user-supplied strings.
 *
 *   <data>/
 *     narwhal.sqlite          metadata (plus -wal and -shm while open)
 *     keys/cache.secret       signing key generated on first start (mode 0600), if none was given
 *     keys/cache.public       its public half, trusted for uploads
 *     store/VERSION           layout version, "1"
 *     store/nar/<h0h1>/<filehash>   NAR files exactly as uploaded, sharded by the first two chars
 *     store/tmp/<random>.part       uploads in flight; rename()d into nar/ once verified,
 *                                   emptied on every server start (never when one worker of several restarts)
 *
 * tmp/ and nar/ are on the same file system, so the final rename is atomic: a NAR is either
 * absent or complete under its final name.
 */
import path from 'node:path'

export const LAYOUT_VERSION = '1'

export interface Layout {
  dataDir: string
  database: string
  keysDir: string
  generatedSecretKey: string
  generatedPublicKey: string
  storeDir: string
  versionFile: string
  narDir: string
  tmpDir: string
}

export function layoutFor (dataDir: string): Layout {
  const storeDir = path.join(dataDir, 'store')
  const keysDir = path.join(dataDir, 'keys')
  return {
    dataDir,
    database: path.join(dataDir, 'narwhal.sqlite'),
    keysDir,
    generatedSecretKey: path.join(keysDir, 'cache.secret'),
    generatedPublicKey: path.join(keysDir, 'cache.public'),
    storeDir,
    versionFile: path.join(storeDir, 'VERSION'),
    narDir: path.join(storeDir, 'nar'),
    tmpDir: path.join(storeDir, 'tmp')
  }
}

/** The path of a NAR file; `fileHash` must already be validated as 52 nix32 characters. */
export function narFilePath (layout: Layout, fileHash: string): string {
  return path.join(layout.narDir, fileHash.slice(0, 2), fileHash)
}
