/**
 * Removing things from the cache without breaking what stays. Shared by `narwhal fsck --repair`
 * and garbage collection, so both follow the same rules:
 *
 * - A narinfo goes together with every narinfo whose closure contains it (its referrers,
 *   transitively): no served narinfo may name a reference the cache cannot give.
 * - A NAR file goes only when no narinfo names it, in three steps (the reverse of an upload's,
 *   cache/store-nar.ts): its row is marked 'deleting' (with the narinfos' removal, in one store
 *   operation), its blob is deleted, then its row is forgotten. An upload of the same NAR waits
 *   while the row says 'deleting', so it never commits a blob that is about to be deleted. A crash
 *   between the steps leaves a 'deleting' row, which the next collection finishes.
 *
 * Every function takes `dryRun`: the store computes the same removal and changes nothing, and no
 * blob is touched, so a dry run reports exactly what a real run would remove at that moment.
 */
import type { ClosureRow, MetadataStore, NarFileRow } from '../db/metadata-store.js'
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

interface Cache { metadata: MetadataStore, blobs: BlobStore }

/** Steps 2 and 3 for NAR files whose rows say 'deleting'. */
async function deleteMarked ({ metadata, blobs }: Cache, rows: NarFileRow[]): Promise<void> {
  for (const row of rows) {
    await blobs.delete(row)
    await metadata.narFiles.forget(row.id)
  }
}

function removal (storePaths: string[], narFiles: NarFileRow[]): Removal {
  return { storePaths, narFiles, bytes: narFiles.reduce((sum, f) => sum + f.fileSize, 0) }
}

/**
 * Removes the narinfos named by `hashParts` (hash parts not in the cache are ignored), every
 * narinfo that references them transitively, and the NAR files left unnamed by that.
 * `stillWanted` (gc) is asked for each hash part, with what removing it would take as it is at
 * that moment; false keeps it.
 */
export async function removeNarinfos (cache: Cache, hashParts: string[],
  options: RemoveOptions & { stillWanted?: (hashPart: string, closure: ClosureRow[]) => boolean, now?: number } = {}): Promise<Removal & { kept: string[] }> {
  const dryRun = options.dryRun ?? false
  const outcome = await cache.metadata.narinfos.remove({ hashParts, stillWanted: options.stillWanted, now: options.now }, { dryRun })
  if (!dryRun) await deleteMarked(cache, outcome.narFiles)
  return { ...removal(outcome.storePaths, outcome.narFiles), kept: outcome.kept }
}

/**
 * Removes NAR files that cannot be served (missing, truncated or corrupt): every narinfo naming
 * one of them, with its referrers, then their rows and whatever is left of their blobs. Without
 * the row, a later upload of the same NAR stores it afresh instead of taking the row for proof
 * that the cache already holds it.
 */
export async function removeNarFiles (cache: Cache, narFileIds: number[], options: RemoveOptions = {}): Promise<Removal> {
  const dryRun = options.dryRun ?? false
  const outcome = await cache.metadata.narinfos.remove({ hashParts: [], narFileIds }, { dryRun })
  if (!dryRun) await deleteMarked(cache, outcome.narFiles)
  return removal(outcome.storePaths, outcome.narFiles)
}

/** A 'pending' NAR file older than this is an upload a crash interrupted. */
export const PENDING_GRACE_MS = 60 * 60 * 1000

/**
 * Removes NAR files that no narinfo names and that were recorded before `createdBefore` (unix
 * ms), uploads that crashed before their file went live, and removals a crash interrupted. The
 * grace period matters: Nix uploads a NAR before its narinfo, so a young unnamed NAR is usually
 * an upload in progress.
 */
export async function removeUnnamedNarFiles (cache: Cache, createdBefore: number, options: RemoveOptions & { now?: number } = {}): Promise<Removal> {
  const dryRun = options.dryRun ?? false
  const pendingBefore = (options.now ?? Date.now()) - PENDING_GRACE_MS
  const rows = await cache.metadata.narFiles.markUnnamedDeleting(createdBefore, pendingBefore, { dryRun })
  if (!dryRun) await deleteMarked(cache, rows)
  return removal([], rows)
}

/**
 * Unlinks a file under store/nar/ that has no nar_files row (left by a crash of an earlier
 * version between a file's rename and its row, or put there by hand). Returns false when a row
 * exists. fsck asks only about files older than its grace period, far older than an upload's
 * moment between its claim and its commit.
 */
export async function removeUnrecordedNarFile (cache: Cache, fileHash: string, options: RemoveOptions = {}): Promise<boolean> {
  if (await cache.metadata.narFiles.get(fileHash) !== undefined) return false
  if (!(options.dryRun ?? false)) await cache.blobs.delete({ fileHash, compression: undefined })
  return true
}
