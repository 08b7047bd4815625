/**
 * Makes a NAR fetched from an upstream part of the cache, with the narinfos that name it.
 *
 * The bytes go through exactly what an upload goes through (storage/nar-ingest.ts: they must
 * hash to FileHash, decompress with the detected method and form a well-formed NAR), and then
 * must agree with what the upstream's signed narinfo says: FileSize, Compression, and the NarHash
 * and NarSize the signature covers. Only then is it stored as an upload is (cache/store-nar.ts
 * storeVerifiedNar), and each narinfo passes the write rules of an upload (cache/accept-narinfo.ts,
 * with the upstream's keys as the trusted ones) and is inserted. A failure before the NAR is
 * stored leaves nothing; one after leaves the NAR unnamed, for gc to collect.
 *
 * From then on the path is an ordinary one: served by the same routes, collected by gc like the
 * rest (src/cache/gc.ts).
 */
import { NarwhalError, isNarwhalError } from '../errors.js'
import type { MetadataStore } from '../db/metadata-store.js'
import type { TrustedKeys } from '../signing/keys.js'
import type { BlobStore } from '../storage/blob-store.js'
import { ingestNar, type IngestedNar, type IngestOptions } from '../storage/nar-ingest.js'
import { acceptNarinfo } from './accept-narinfo.js'
import { storeVerifiedNar } from './store-nar.js'
import type { Provenance } from './provenance.js'

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
  cache: { metadata: MetadataStore, blobs: BlobStore, provenance: Provenance }, options: Omit<IngestOptions, 'onVerified'>,
  onVerified: () => void = () => {}): Promise<IngestedNar> {
  const { nar, blob } = await ingestNar(body, expected.fileHash, cache.blobs, {
    ...options,
    onVerified: verified => {
      checkAgainstNarinfo(verified, expected)
      onVerified()
    }
  })
  try {
    // The rename's directory entry is not synced: a pulled path lost to a power cut is fetched
    // again when asked for (a row whose file is missing too: the NAR route asks the pull-through),
    // and an fsync here blocks the event loop. The file's bytes are synced (ingestNar) before.
    await storeVerifiedNar(cache.metadata, nar, async () => await blob.commit(nar, { durable: false }))
  } finally {
    await blob.discard()
  }
  for (const path of paths) {
    try {
      const origin = { tokenId: null, tokenName: null, clientAddress: null, upstream: path.upstream }
      await acceptNarinfo(path.narinfo, path.hashPart, cache.metadata, path.keys, { provenance: cache.provenance, origin }, true, cache.blobs)
    } catch (err) {
      // Pushed meanwhile with other content: the cache's own narinfo stays, and this one is not
      // added; the NAR may still serve the others.
      if (!isNarwhalError(err) || err.code !== 'NARWHAL_CONFLICT') throw err
    }
  }
  return nar
}
