/**
 * Removing things from the cache without breaking what stays. Shared by `narwhal fsck --repair`
 * and garbage collection, so both follow the same two rules:
 *
 * - A narinfo goes together with every narinfo whose closure contains it (its referrers,
 *   transitively): no served narinfo may name a reference the cache cannot give.
 * - A NAR file goes only when no narinfo names it. Its row is deleted in one SQLite write
 *   transaction, then its object is deleted from the blob store. (An upload commits its object
 *   before it records its row; the NAR file states of issue 17 close the window where it does so
 *   between gc's two steps.)
 *
 * Every function takes `dryRun`: the same statements run, then the transaction is rolled back and
 * no object is touched, so a dry run reports exactly what a real run would remove at that moment.
 */
import type { Metadata, NarFileRow } from '../db/metadata.js'
import type { BlobStore } from '../storage/blob-store.js'

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

/** Deletes the row of each NAR file no narinfo names; call inside a transaction. */
function removeUnnamed (metadata: Metadata, rows: NarFileRow[]): NarFileRow[] {
  return rows.filter(row => metadata.deleteNarFileRow(row.id))
}

/** After the transaction: the objects of the NAR files whose rows it deleted. */
export async function deleteObjects (blobs: BlobStore, removal: Removal, dryRun = false): Promise<Removal> {
  if (!dryRun) for (const row of removal.narFiles) await blobs.delete(row)
  return removal
}

/**
 * removeNarinfos' rows only, inside the caller's transaction (gc's batches); the caller then
 * deletes the removal's objects (deleteObjects).
 */
export function removeNarinfoRows (metadata: Metadata, hashParts: string[]): Removal {
  return removeWithReferrers(metadata, hashParts, [])
}

/**
 * Removes the narinfos named by `hashParts` (hash parts not in the cache are ignored), every
 * narinfo that references them transitively, and the NAR files left unnamed by that.
 */
export async function removeNarinfos (metadata: Metadata, blobs: BlobStore, hashParts: string[], options: RemoveOptions = {}): Promise<Removal> {
  const dryRun = options.dryRun ?? false
  return await deleteObjects(blobs, inTransaction(metadata, dryRun, () => removeWithReferrers(metadata, hashParts, [])), dryRun)
}

/**
 * Removes NAR files that cannot be served (missing, truncated or corrupt on disk): every narinfo
 * naming one of them, with its referrers, then their rows and whatever is left of their files.
 * Without the row, a later upload of the same NAR stores it afresh instead of taking the row for
 * proof that the cache already holds it.
 */
export async function removeNarFiles (metadata: Metadata, blobs: BlobStore, narFileIds: number[], options: RemoveOptions = {}): Promise<Removal> {
  const dryRun = options.dryRun ?? false
  return await deleteObjects(blobs, inTransaction(metadata, dryRun, () => {
    const namers = metadata.narinfosNaming(narFileIds).map(n => n.hashPart)
    return removeWithReferrers(metadata, namers, narFileIds)
  }), dryRun)
}

/** The narinfos with their referrers, then the NAR files left unnamed; call inside a transaction. */
function removeWithReferrers (metadata: Metadata, hashParts: string[], narFileIds: number[]): Removal {
  const doomed = metadata.withReferrers(hashParts)
  for (const n of doomed) metadata.deleteNarinfo(n.hashPart)
  const fileIds = [...new Set([...narFileIds, ...doomed.map(n => n.narFileId)])]
  const candidates = fileIds.map(id => metadata.narFileById(id)).filter((row): row is NarFileRow => row !== undefined)
  const narFiles = removeUnnamed(metadata, candidates)
  return { storePaths: doomed.map(n => n.storePath), narFiles, bytes: narFiles.reduce((sum, f) => sum + f.fileSize, 0) }
}

/**
 * Removes NAR files that no narinfo names and that were recorded before `createdBefore` (unix
 * ms). The grace period matters: Nix uploads a NAR before its narinfo, so a young unnamed NAR is
 * usually an upload in progress.
 */
export async function removeUnnamedNarFiles (metadata: Metadata, blobs: BlobStore, createdBefore: number, options: RemoveOptions = {}): Promise<Removal> {
  const dryRun = options.dryRun ?? false
  return await deleteObjects(blobs, inTransaction(metadata, dryRun, () => {
    const narFiles = removeUnnamed(metadata, metadata.unnamedNarFiles(createdBefore))
    return { storePaths: [], narFiles, bytes: narFiles.reduce((sum, f) => sum + f.fileSize, 0) }
  }), dryRun)
}

/**
 * Deletes an object that has no nar_files row (left by a crash between the object's commit and
 * its row, or put there by hand). Returns false when a row exists. (An upload of the same NAR
 * that records it in between loses its object; the NAR file states of issue 17 close that.)
 */
export async function removeUnrecordedNarFile (metadata: Metadata, blobs: BlobStore, fileHash: string, options: RemoveOptions = {}): Promise<boolean> {
  if (metadata.narFile(fileHash) !== undefined) return false
  if (!(options.dryRun ?? false)) await blobs.delete({ fileHash, compression: undefined })
  return true
}
