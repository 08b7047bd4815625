/**
 * Makes an uploaded NAR file part of the cache: verified while it streams in
 * (storage/nar-ingest.ts), then renamed into place and recorded in one SQLite write transaction.
 * Used by PUT /nar/<file> and by the batch upload route, so both commit the same way.
 *
 * Why one transaction: garbage collection deletes an unnamed NAR's row and unlinks its file in
 * one write transaction (cache/remove-paths.ts). If the rename happened first and the row were
 * recorded afterwards in a statement of its own, a collection running in between could unlink
 * the file just renamed for a re-upload of the same NAR (its old row still unnamed), and the row
 * inserted next would describe a file that is gone. With the row inserted and the file renamed
 * while this process holds the write lock, a collection sees either neither or both.
 *
 * The same NAR stored twice at once (two pushers, possibly in two worker processes of `serve
 * --workers N`) is safe: the write lock makes them take turns, the second's insert finds the
 * first's row (ON CONFLICT DO NOTHING), and its rename replaces the file with identical bytes.
 *
 * A crash between the rename and the commit leaves a file without a row: harmless (the name is
 * the content's hash, a re-upload renames over it) and what `removeUnrecordedNarFile` cleans up.
 */
import type { Metadata } from '../db/metadata.js'
import type { BlobStore } from '../storage/blob-store.js'
import { ingestNar, type IngestedNar, type IngestOptions } from '../storage/nar-ingest.js'

export async function storeNar (body: AsyncIterable<Buffer>, fileHash: string, cache: { metadata: Metadata, blobs: BlobStore },
  options: IngestOptions): Promise<IngestedNar> {
  const { nar, temp } = await ingestNar(body, fileHash, cache.blobs, options)
  try {
    cache.metadata.transaction(() => {
      cache.metadata.recordNarFile(nar)
      cache.blobs.commitNar(temp, nar.fileHash)
    })
  } finally {
    // After a successful rename there is nothing left at the temp name; after a failure the
    // verified bytes are dropped and the client's retry uploads them again.
    await temp.discard()
  }
  return nar
}
