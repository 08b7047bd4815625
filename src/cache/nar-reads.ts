/**
 * Reading a NAR the cache serves, the one rule for the NAR route (server/routes/nar.ts) and the
 * fast path (server/fast-reads.ts): only NARs the database records as live are served (a pending
 * one is not committed yet, a deleting one is going, an object without a row is a crashed upload
 * or one garbage collection is removing), and only when the object
 * has the recorded size, checked before any header goes out, so a missing or cut-short object is
 * a clean 404 (and an error in the log), never a truncated 200.
 */
import type { MetadataStore } from '../db/metadata-store.js'
import type { BlobBody, BlobStore, ByteRange } from '../storage/blob-store.js'

export type { BlobBody, ByteRange }

export type ServedNar =
  /** The database does not record it as live. */
  | { kind: 'not-recorded' }
  /** Recorded, but its object is missing or has another size: `reason` and `detail` are for the log. */
  | { kind: 'damaged', reason: string, detail: Record<string, unknown> }
  /** The store would rather the client fetched it from there (a presigned URL). */
  | { kind: 'redirect', url: string }
  /** Its bytes, checked against the recorded size; the caller sends or closes it. */
  | { kind: 'body', body: BlobBody }

interface NarReadParts { metadata: MetadataStore, blobs: BlobStore }

/**
 * Opens a served NAR. `range` is asked with the recorded size and names the bytes wanted
 * (undefined: all of them).
 */
export async function openServedNar (cache: NarReadParts, fileHash: string,
  range?: (fileSize: number) => ByteRange | undefined): Promise<ServedNar> {
  const row = await cache.metadata.narFiles.get(fileHash)
  if (row?.state !== 'live') return { kind: 'not-recorded' }
  const read = await cache.blobs.open(row, range?.(row.fileSize))
  if (read === undefined) return { kind: 'damaged', reason: 'NAR file recorded in the database is missing on disk', detail: { fileHash } }
  if (read.kind === 'redirect') return read
  if (read.size !== row.fileSize) {
    read.close()
    return { kind: 'damaged', reason: 'NAR file on disk has the wrong size', detail: { fileHash, size: read.size, expected: row.fileSize } }
  }
  return { kind: 'body', body: read }
}

/**
 * For the fast path, read at once: the whole NAR when it is served, of 1 to `maxBytes` bytes, and
 * the store answers without waiting (BlobStore.immediate); undefined otherwise, and the route
 * answers (and logs what is wrong).
 */
export function readSmallNarNow (cache: NarReadParts, fileHash: string, maxBytes: number): Buffer | undefined {
  const { immediate } = cache.blobs
  if (immediate === undefined) return undefined
  const row = cache.metadata.narFiles.peekLive(fileHash)
  if (row === undefined || row === null || row.fileSize === 0 || row.fileSize > maxBytes) return undefined
  return immediate.readWhole(fileHash, row.fileSize)
}

/** Whether a NAR kept in memory is still stored with its size (one stat): one removed or cut short by hand is not. */
export function storedNow (cache: NarReadParts, fileHash: string, size: number): boolean {
  return cache.blobs.immediate?.size(fileHash) === size
}
