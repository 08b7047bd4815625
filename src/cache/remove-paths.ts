/**
 * Removing things from the cache without breaking what stays. Shared by `narwhal fsck --repair`
 * and garbage collection, so both follow the same two rules:
 *
 * - A narinfo goes together with every narinfo whose closure contains it (its referrers,
 *   transitively): no served narinfo may name a reference the cache cannot give.
 * - A NAR file goes only when no narinfo names it. Its row is deleted and its file unlinked inside
 *   one SQLite write transaction; an upload records a NAR's row in a write transaction too, so the
 *   two cannot interleave into a row whose file was just unlinked (see FileBlobStore.commitNar).
 *
 * Every function takes `dryRun`: the same statements run, then the transaction is rolled back and
 * no file is touched, so a dry run reports exactly what a real run would remove at that moment.
 */
import { unlinkSync } from 'node:fs'
import type { Metadata, NarFileRow } from '../db/metadata.js'
import type { FileBlobStore } from '../storage/file-blob-store.js'

export interface Removal {
  /** Store paths whose narinfos were removed (asked for, or referrers of those). */
  storePaths: string[]
  /** NAR files removed because no narinfo names them any more. */
  narFiles: NarFileRow[]
  /** Sum of the removed NAR files' sizes. */
  bytes: number
}

export interface RemoveOptions { dryRun?: boolean }

/** Thrown inside a transaction to roll a dry run back while carrying its result out. */
class DryRunRollback {
  constructor (readonly removal: Removal) {}
}

function inTransaction (metadata: Metadata, dryRun: boolean, work: () => Removal): Removal {
  try {
    return metadata.transaction(() => {
      const removal = work()
      if (dryRun) throw new DryRunRollback(removal)
      return removal
    })
  } catch (err) {
    if (err instanceof DryRunRollback) return err.removal
    throw err
  }
}

function unlinkIfPresent (file: string): void {
  try {
    unlinkSync(file)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
  }
}

/** Deletes the row and file of each NAR file no narinfo names; call inside a transaction. */
function removeUnnamed (metadata: Metadata, blobs: FileBlobStore, rows: NarFileRow[], dryRun: boolean): NarFileRow[] {
  const removed: NarFileRow[] = []
  for (const row of rows) {
    if (!metadata.deleteNarFileRow(row.id)) continue
    if (!dryRun) unlinkIfPresent(blobs.narPath(row.fileHash))
    removed.push(row)
  }
  return removed
}

/**
 * Removes the narinfos named by `hashParts` (hash parts not in the cache are ignored), every
 * narinfo that references them transitively, and the NAR files left unnamed by that.
 */
export function removeNarinfos (metadata: Metadata, blobs: FileBlobStore, hashParts: string[], options: RemoveOptions = {}): Removal {
  const dryRun = options.dryRun ?? false
  return inTransaction(metadata, dryRun, () => removeWithReferrers(metadata, blobs, hashParts, [], dryRun))
}

/**
 * Removes NAR files that cannot be served (missing, truncated or corrupt on disk): every narinfo
 * naming one of them, with its referrers, then their rows and whatever is left of their files.
 * Without the row, a later upload of the same NAR stores it afresh instead of taking the row for
 * proof that the cache already holds it.
 */
export function removeNarFiles (metadata: Metadata, blobs: FileBlobStore, narFileIds: number[], options: RemoveOptions = {}): Removal {
  const dryRun = options.dryRun ?? false
  return inTransaction(metadata, dryRun, () => {
    const namers = metadata.narinfosNaming(narFileIds).map(n => n.hashPart)
    return removeWithReferrers(metadata, blobs, namers, narFileIds, dryRun)
  })
}

/** The narinfos with their referrers, then the NAR files left unnamed; call inside a transaction. */
function removeWithReferrers (metadata: Metadata, blobs: FileBlobStore, hashParts: string[], narFileIds: number[], dryRun: boolean): Removal {
  const doomed = metadata.withReferrers(hashParts)
  for (const n of doomed) metadata.deleteNarinfo(n.hashPart)
  const fileIds = [...new Set([...narFileIds, ...doomed.map(n => n.narFileId)])]
  const candidates = fileIds.map(id => metadata.narFileById(id)).filter((row): row is NarFileRow => row !== undefined)
  const narFiles = removeUnnamed(metadata, blobs, candidates, dryRun)
  return { storePaths: doomed.map(n => n.storePath), narFiles, bytes: narFiles.reduce((sum, f) => sum + f.fileSize, 0) }
}

/**
 * Removes NAR files that no narinfo names and that were recorded before `createdBefore` (unix
 * ms). The grace period matters: Nix uploads a NAR before its narinfo, so a young unnamed NAR is
 * usually an upload in progress.
 */
export function removeUnnamedNarFiles (metadata: Metadata, blobs: FileBlobStore, createdBefore: number, options: RemoveOptions = {}): Removal {
  const dryRun = options.dryRun ?? false
  return inTransaction(metadata, dryRun, () => {
    const narFiles = removeUnnamed(metadata, blobs, metadata.unnamedNarFiles(createdBefore), dryRun)
    return { storePaths: [], narFiles, bytes: narFiles.reduce((sum, f) => sum + f.fileSize, 0) }
  })
}

/**
 * Unlinks a file under store/nar/ that has no nar_files row (left by a crash between the file's
 * rename and its row, or put there by hand). Checked and unlinked in one write transaction so an
 * upload recording the same file cannot slip in between. Returns false when a row exists.
 */
export function removeUnrecordedNarFile (metadata: Metadata, blobs: FileBlobStore, fileHash: string, options: RemoveOptions = {}): boolean {
  if (options.dryRun ?? false) return metadata.narFile(fileHash) === undefined
  return metadata.transaction(() => {
    if (metadata.narFile(fileHash) !== undefined) return false
    unlinkIfPresent(blobs.narPath(fileHash))
    return true
  })
}
