/**
 * Makes an uploaded NAR file part of the cache, the same way for PUT /nar/<file> and for batch
 * parts: verified while it streams in (storage/nar-ingest.ts), then committed to the blob store
 * and recorded.
 *
 * - The blob is committed before its row is written: a row never names an object not there yet.
 *   (gc deletes an unnamed NAR's row, then its object (cache/remove-paths.ts); the NAR file
 *   states of issue 17 close the window where a re-upload commits between the two.) Two uploads
 *   of one NAR at once both commit identical bytes; the second finds the first's row (ON
 *   CONFLICT DO UPDATE).
 * - Every upload of a NAR, new or not, restarts its grace period (nar_files.created_at): Nix
 *   sends the NAR before the narinfo, and a retried push must not lose the NAR between the two.
 * - A crash between the blob's commit and the row's leaves a file without a row: harmless (the name is the
 *   content's hash) and what `removeUnrecordedNarFile` cleans up.
 * - The row's commit does not wait for the disk (transactionDurableWithNext); the file and its
 *   directory entry are synced before it. A NAR is of use only once its narinfo is accepted, a
 *   commit that waits for the disk and takes the row with it; a power cut before that loses the
 *   row, and the narinfo is refused until the NAR is sent again. Why: one fsync fewer per
 *   uploaded path (BENCHMARKS.md, storeNar of 600 small NARs).
 */
import type { Limits } from '../config/config.js'
import type { Metadata } from '../db/metadata.js'
import type { BlobStore } from '../storage/blob-store.js'
import { checkReupload, ingestNar, type IngestedNar, type IngestOptions } from '../storage/nar-ingest.js'

/**
 * Whether the cache already holds this NAR, its row and its whole file, so that an upload of it
 * need only check that the bytes hash to the name (storage/nar-ingest.ts checkReupload) and
 * store nothing. When it does, the NAR's grace period restarts at `now`.
 *
 * The grace period restarts before the file is looked at, and before the body is read: once it
 * has, gc's removal of unnamed NARs leaves this one alone for a whole grace period, so the file
 * found here is still there when the upload is answered. (Restarted after the body, a collection
 * while it arrived could take the NAR and the 200 would answer for a NAR that is gone.) A
 * re-upload whose bytes turn out wrong has then kept a verified NAR a little longer, which is
 * harmless. When the row is gone or the file is missing or cut short, the caller stores the
 * upload with storeNar, which re-creates both.
 */
export async function holdsNar (fileHash: string, cache: { metadata: Metadata, blobs: BlobStore }, now = Date.now()): Promise<boolean> {
  // A read first: most uploads are of new NARs, which need no write here.
  if (cache.metadata.narFile(fileHash) === undefined) return false
  const row = cache.metadata.renewNarFile(fileHash, now)
  return row !== undefined && await cache.blobs.size(row) === row.fileSize
}

export async function storeNar (body: AsyncIterable<Buffer>, fileHash: string, cache: { metadata: Metadata, blobs: BlobStore },
  options: IngestOptions, now?: number): Promise<IngestedNar> {
  const { nar, blob } = await ingestNar(body, fileHash, cache.blobs, options)
  try {
    await blob.commit(nar)
    cache.metadata.transactionDurableWithNext(() => {
      // The time of the commit, not of the request: the grace period counts from the answer.
      cache.metadata.recordNarFile(nar, now ?? Date.now())
    })
  } finally {
    // After a commit there is nothing left to drop; after a failure the verified bytes are
    // dropped and the client's retry uploads them again.
    await blob.discard()
  }
  return nar
}

export type NarUploadResult = { result: 'unchanged' } | { result: 'created', nar: IngestedNar }

/** A NAR upload decided before its body is read. */
export interface NarUpload {
  /** True when the cache already holds the NAR: the body is then only checked against its name. */
  readonly held: boolean
  receive: (body: AsyncIterable<Buffer>) => Promise<NarUploadResult>
}

/**
 * The one sequence of a NAR upload, for PUT /nar/<file> and the batch route alike: holdsNar,
 * then either checkReupload (already held: re-uploads of identical bytes succeed, as Nix re-sends
 * on --repair and a retried push re-sends a NAR whose narinfo never came) or storeNar, with the
 * limits of the configuration. In two steps so the PUT route can send `100 Continue` between
 * them: the room is checked before the body is read (ingestNar checks again), so a 507 reaches
 * a client that has not sent its body yet and can retry it whole.
 */
export async function startNarUpload (fileHash: string, cache: { metadata: Metadata, blobs: BlobStore }, limits: Readonly<Limits>,
  declaredBytes = 0): Promise<NarUpload> {
  const held = await holdsNar(fileHash, cache)
  if (!held) await cache.blobs.ensureRoom(declaredBytes, limits.freeSpaceReserveBytes)
  return {
    held,
    receive: async (body) => {
      if (held) {
        await checkReupload(body, fileHash, limits.narBytes)
        return { result: 'unchanged' }
      }
      const nar = await storeNar(body, fileHash, cache, {
        maxBytes: limits.narBytes,
        maxNarSize: limits.narSizeBytes,
        declaredBytes,
        reserveBytes: limits.freeSpaceReserveBytes
      })
      return { result: 'created', nar }
    }
  }
}

/** The whole upload when nothing happens between the decision and the body (batch parts). */
export async function putNar (body: AsyncIterable<Buffer>, fileHash: string, cache: { metadata: Metadata, blobs: BlobStore },
  limits: Readonly<Limits>): Promise<NarUploadResult> {
  return await (await startNarUpload(fileHash, cache, limits)).receive(body)
}
