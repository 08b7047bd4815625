/**
 * Provenance: for every narinfo write that changed the cache, who made it (the push token's id
 * and name, the client's address), which trusted keys made it acceptable (the names of those
 * whose signatures verified), when, and for a path pulled through from an upstream cache, which
 * upstream. Recorded by acceptNarinfo in the narinfo's own write transaction, so a path is never
 * served without it; removed with the path (the rows cascade with their narinfo).
 */
import type { Db } from '../db/database.js'
import { ProvenanceSql, type ProvenanceRow } from '../db/provenance.js'

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
  private readonly sql: ProvenanceSql

  constructor (db: Db) {
    this.sql = new ProvenanceSql(db)
  }

  /** Call inside the transaction that created the narinfo or merged its signatures. */
  record (hashPart: string, outcome: 'created' | 'merged', origin: WriteOrigin, keyNames: string[], now = Date.now()): void {
    this.sql.insert({
      hashPart,
      acceptedAt: now,
      outcome,
      tokenId: origin.tokenId,
      tokenName: origin.tokenName,
      keyNames: [...new Set(keyNames)].sort(),
      clientAddress: origin.clientAddress,
      upstream: origin.upstream ?? null
    })
  }

  /** Every recorded write of a path, oldest first; empty when the path is not in the cache. */
  ofPath (hashPart: string): ProvenanceRow[] {
    return this.sql.ofPath(hashPart)
  }

  /** Paths created since `since` (unix ms) and still in the cache. */
  createdSince (since: number): number {
    return this.sql.createdSince(since)
  }
}
