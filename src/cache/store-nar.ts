/**
 * Makes an uploaded NAR file part of the cache, the same way for PUT /nar/<file>, batch parts and
 * NARs pulled from upstreams: verified while it streams in (storage/nar-ingest.ts), then stored
 * by the protocol of NAR file states (db/metadata-store.ts), which needs no transaction around
 * the database and the blob store:
 *
 *   claim (row 'pending', or already 'live') → commit the blob → mark the row 'live'
 *
 * gc and fsck remove a NAR file the other way round (cache/remove-paths.ts): mark the row
 * 'deleting' → delete the blob → forget the row. A claim of a row being deleted waits for the
 * removal to finish, so a removal never deletes a blob an upload just committed, and a narinfo
 * names only a 'live' file.
 *
 * - Every upload of a NAR, new or not, restarts its grace period (the claim): Nix sends the NAR
 *   before the narinfo, and a retried push must not lose the NAR between the two.
 * - A crash between claim and live leaves a 'pending' row, which gc removes after an hour.
 * - Neither write waits for the disk; the narinfo's commit, which does, takes them along (one
 *   fsync fewer per uploaded path, BENCHMARKS.md). A power cut before it loses the row, and the
 *   narinfo is refused until the NAR is sent again.
 */
import type { Limits } from '../config/config.js'
import type { MetadataStore, NarFileFacts, NarFileRow } from '../db/metadata-store.js'
import { NarwhalError } from '../errors.js'
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
export async function holdsNar (fileHash: string, cache: { metadata: MetadataStore, blobs: BlobStore }, now = Date.now()): Promise<boolean> {
  // A read first: most uploads are of new NARs, which need no write here.
  if ((await cache.metadata.narFiles.get(fileHash))?.state !== 'live') return false
  const row = await cache.metadata.narFiles.renew(fileHash, now)
  return row !== undefined && await cache.blobs.size(row) === row.fileSize
}

/** How long a claim waits for a removal of the same NAR file to finish, and how often it asks. */
const CLAIM_PATIENCE_MS = 3000
const CLAIM_RETRY_MS = 100

/**
 * The protocol above, for a verified NAR whose blob `commit` makes visible under its file hash
 * (committing bytes already there is success). Returns the live row. Throws NARWHAL_BUSY when a
 * removal of the same file holds it longer than CLAIM_PATIENCE_MS.
 */
export async function storeVerifiedNar (metadata: MetadataStore, nar: NarFileFacts, commit: () => void | Promise<void>,
  now?: number): Promise<NarFileRow> {
  const giveUpAt = Date.now() + CLAIM_PATIENCE_MS
  for (;;) {
    // The time of the claim, not of the request: the grace period counts from the answer.
    const claim = await metadata.narFiles.claim(nar, now ?? Date.now())
    if (claim.kind !== 'deleting') {
      await commit()
      if (await metadata.narFiles.markLive(claim.row.id)) return { ...claim.row, state: 'live' }
      // Only a claim left pending for longer than gc's grace for crashed uploads gets here.
      break
    }
    if (Date.now() >= giveUpAt) break
    await new Promise(resolve => setTimeout(resolve, CLAIM_RETRY_MS))
  }
  throw new NarwhalError('NARWHAL_BUSY', `NAR file ${nar.fileHash} is being removed by a collection at this moment; upload it again`)
}

export async function storeNar (body: AsyncIterable<Buffer>, fileHash: string, cache: { metadata: MetadataStore, blobs: BlobStore },
  options: IngestOptions, now?: number): Promise<IngestedNar> {
  const { nar, blob } = await ingestNar(body, fileHash, cache.blobs, options)
  try {
    await storeVerifiedNar(cache.metadata, nar, async () => await blob.commit(nar), now)
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
export async function startNarUpload (fileHash: string, cache: { metadata: MetadataStore, blobs: BlobStore }, limits: Readonly<Limits>,
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
export async function putNar (body: AsyncIterable<Buffer>, fileHash: string, cache: { metadata: MetadataStore, blobs: BlobStore },
  limits: Readonly<Limits>): Promise<NarUploadResult> {
  return await (await startNarUpload(fileHash, cache, limits)).receive(body)
}
