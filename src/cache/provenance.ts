/**
 * Provenance: for every narinfo write that changed the cache, who made it (the push token's id
 * and name, the client's address), which trusted keys made it acceptable (the names of those
 * whose signatures verified), when, and for a path pulled through from an upstream cache, which
 * upstream. The metadata store writes it with the narinfo itself (NarinfoStore.insert and
 * mergeSignatures), so a path is never served without it; it goes with the path.
 */
import type { MetadataStore, ProvenanceEntry, ProvenanceRow } from '../db/metadata-store.js'

export type { ProvenanceRow }

/** Who and where a write came from. */
export interface WriteOrigin {
  tokenId: number | null
  tokenName: string | null
  /** The client's address as the server saw it (trustProxy applied). */
  clientAddress: string | null
  /** The upstream cache a pulled path came from; null or absent for pushes. */
  upstream?: string | null
}

export class Provenance {
  private readonly metadata: MetadataStore

  constructor (metadata: MetadataStore) {
    this.metadata = metadata
  }

  /** What the store records with a write from `origin` that the keys `keyNames` made acceptable. */
  entry (origin: WriteOrigin, keyNames: string[], now = Date.now()): ProvenanceEntry {
    return {
      acceptedAt: now,
      tokenId: origin.tokenId,
      tokenName: origin.tokenName,
      keyNames: [...new Set(keyNames)].sort(),
      clientAddress: origin.clientAddress,
      upstream: origin.upstream ?? null
    }
  }

  /** Every recorded write of a path, oldest first; empty when the path is not in the cache. */
  async ofPath (hashPart: string): Promise<ProvenanceRow[]> {
    return await this.metadata.provenance.ofPath(hashPart)
  }

  /** Paths created since `since` (unix ms) and still in the cache. */
  async createdSince (since: number): Promise<number> {
    return await this.metadata.provenance.createdSince(since)
  }
}
