/**
 * Makes a NAR fetched from an upstream part of the cache, with the narinfos that name it.
 *
 * The bytes go through exactly what an upload goes through (storage/nar-ingest.ts: they must
 * hash to FileHash, decompress with the detected method and form a well-formed NAR), and then
 * must agree with what the upstream's signed narinfo says: FileSize, Compression, and the NarHash
 * and NarSize the signature covers. Only then the blob is committed and, in one write
 * transaction, the NAR file's row is recorded and each narinfo passes the write rules of an
 * upload (cache/accept-narinfo.ts, with the upstream's keys as the trusted ones) and is inserted.
 * A failure before the commit leaves nothing; one after it leaves an object no row names, which
 * the next pull or upload of it reuses and fsck reports.
 *
 * From then on the path is an ordinary one: served by the same routes, collected by gc like the
 * rest (src/cache/gc.ts).
 */
import { NarwhalError, isNarwhalError } from '../errors.js'
import type { Metadata } from '../db/metadata.js'
import type { TrustedKeys } from '../signing/keys.js'
import type { BlobStore } from '../storage/blob-store.js'
import { ingestNar, type IngestedNar, type IngestOptions } from '../storage/nar-ingest.js'
import { acceptNarinfo } from './accept-narinfo.js'
import type { Provenance } from './provenance.js'
import type { ReferenceSource } from './pull-through.js'

export interface ExpectedNar {
  fileHash: string
  fileSize: number
  compression: string
  narHash: string
  narSize: number
}

export interface PulledPath {
  hashPart: string
  /** The upstream's URL, recorded as the path's provenance. */
  upstream: string
  /** The narinfo as narwhal serves it (cache/pulled-narinfo.ts). */
  narinfo: string
  /** The keys of the upstream it came from. */
  keys: TrustedKeys
}

function mismatch (field: string, signed: string | number, actual: string | number): NarwhalError {
  return new NarwhalError('NARWHAL_NAR_INVALID', `NAR from upstream: ${field} is ${actual}, but its signed narinfo says ${signed}`)
}

/** Throws NARWHAL_NAR_INVALID when the verified NAR is not the one the narinfo describes. */
function checkAgainstNarinfo (nar: IngestedNar, expected: ExpectedNar): void {
  if (nar.fileSize !== expected.fileSize) throw mismatch('FileSize', expected.fileSize, nar.fileSize)
  if (nar.compression !== expected.compression) throw mismatch('Compression', expected.compression, nar.compression)
  if (nar.narHash !== expected.narHash) throw mismatch('NarHash', `sha256:${expected.narHash}`, `sha256:${nar.narHash}`)
  if (nar.narSize !== expected.narSize) throw mismatch('NarSize', expected.narSize, nar.narSize)
}

/**
 * Verifies `body` against `expected` and stores it with `paths`; returns the measurements.
 * `options.maxBytes` and `maxNarSize` should be no more than the narinfo's sizes, so a body
 * longer than announced is refused as it arrives. `onVerified` runs once the bytes are proven to
 * be the NAR the narinfo describes, before they are on the disk.
 */
export async function storePulledNar (body: AsyncIterable<Buffer>, expected: ExpectedNar, paths: PulledPath[],
  cache: { metadata: Metadata, blobs: BlobStore, provenance: Provenance }, elsewhere: ReferenceSource, options: Omit<IngestOptions, 'onVerified'>,
  onVerified: () => void = () => {}): Promise<IngestedNar> {
  const { nar, blob } = await ingestNar(body, expected.fileHash, cache.blobs, {
    ...options,
    onVerified: verified => {
      checkAgainstNarinfo(verified, expected)
      onVerified()
    }
  })
  try {
    // Not waiting for the disk (see Metadata.transactionDurableWithNext), neither for the row nor
    // for the rename: a pulled path lost to a power cut is fetched again when asked for (a row
    // whose file is missing too: the NAR route asks the pull-through). The bytes are durable
    // (ingestNar) before the commit.
    await blob.commit(nar, { durable: false })
    cache.metadata.transactionDurableWithNext(() => {
      cache.metadata.recordNarFile(nar)
      for (const path of paths) {
        try {
          const origin = { tokenId: null, tokenName: null, clientAddress: null, upstream: path.upstream }
          acceptNarinfo(path.narinfo, path.hashPart, cache.metadata, path.keys, { provenance: cache.provenance, origin }, elsewhere)
        } catch (err) {
          // Pushed meanwhile with other content: the cache's own narinfo stays, and this one is
          // not added (its savepoint is rolled back); the NAR may still serve the others.
          if (!isNarwhalError(err) || err.code !== 'NARWHAL_CONFLICT') throw err
        }
      }
    })
  } finally {
    await blob.discard()
  }
  return nar
}
