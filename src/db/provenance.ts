/**
 * The SQL of provenance (who put each path into the cache, with which trusted keys) and of the
 * audit log (every write and refusal). The rules around them live in src/cache/provenance.ts and
 * src/cache/audit-log.ts; the tables in migrations/0003_provenance_audit.sql.
 */
import type { Db } from './database.js'

export interface ProvenanceRecord {
  /** Hash part of the narinfo the row belongs to; it must exist (same transaction). */
  hashPart: string
  acceptedAt: number
  outcome: 'created' | 'merged'
  tokenId: number | null
  tokenName: string | null
  keyNames: string[]
  clientAddress: string | null
  upstream: string | null
}

export type ProvenanceRow = Omit<ProvenanceRecord, 'hashPart'>

export interface AuditRecord {
  at: number
  tokenId: number | null
  tokenName: string | null
  clientAddress: string | null
  method: string
  subject: string
  hashPart: string | null
  fileHash: string | null
  outcome: string
  status: number
  code: string | null
  reason: string | null
}

export interface AuditRow extends AuditRecord { id: number }

export interface AuditFilter {
  /** Unix ms; entries at or after it. */
  since?: number
  /** Entries about this store path: its narinfo writes, and writes of the NAR file it names. */
  hashPart?: string
  fileHash?: string
  tokenId?: number
  limit?: number
}

type ProvenanceSqlRow = Omit<ProvenanceRow, 'keyNames'> & { keyNames: string }

export class ProvenanceSql {
  private readonly db: Db
  private readonly stmts

  constructor (db: Db) {
    this.db = db
    this.stmts = {
      insert: db.prepare(
        `INSERT INTO provenance (narinfo_id, accepted_at, outcome, token_id, token_name, key_names, client_address, upstream)
         SELECT id, @acceptedAt, @outcome, @tokenId, @tokenName, @keyNames, @clientAddress, @upstream
         FROM narinfos WHERE hash_part = @hashPart`),
      ofPath: db.prepare<[string], ProvenanceSqlRow>(
        `SELECT p.accepted_at AS acceptedAt, p.outcome, p.token_id AS tokenId, p.token_name AS tokenName,
                p.key_names AS keyNames, p.client_address AS clientAddress, p.upstream
         FROM provenance p JOIN narinfos n ON n.id = p.narinfo_id WHERE n.hash_part = ? ORDER BY p.id`),
      createdSince: db.prepare<[number], { n: number }>(
        "SELECT count(*) AS n FROM provenance WHERE accepted_at >= ? AND outcome = 'created'"),
      insertAudit: db.prepare(
        `INSERT INTO audit_log (at, token_id, token_name, client_address, method, subject, hash_part, file_hash,
                                outcome, status, code, reason)
         VALUES (@at, @tokenId, @tokenName, @clientAddress, @method, @subject, @hashPart, @fileHash,
                 @outcome, @status, @code, @reason)`),
      // The newest `keep` rows stay; ids only grow (AUTOINCREMENT), so this is one range delete.
      capAudit: db.prepare<[number]>(
        'DELETE FROM audit_log WHERE id <= (SELECT max(id) FROM audit_log) - ?'),
      queryAudit: db.prepare<[{ since: number, hashPart: string | null, fileHash: string | null, tokenId: number | null, limit: number }], AuditRow>(
        `SELECT * FROM (
           SELECT id, at, token_id AS tokenId, token_name AS tokenName, client_address AS clientAddress, method, subject,
                  hash_part AS hashPart, file_hash AS fileHash, outcome, status, code, reason
           FROM audit_log
           WHERE at >= @since
             AND (@tokenId IS NULL OR token_id = @tokenId)
             AND ((@hashPart IS NULL AND @fileHash IS NULL) OR hash_part = @hashPart OR file_hash = @fileHash)
           ORDER BY id DESC LIMIT @limit)
         ORDER BY id`)
    }
  }

  /** Call inside the transaction that wrote the narinfo. */
  insert (record: ProvenanceRecord): void {
    const result = this.stmts.insert.run({ ...record, keyNames: record.keyNames.join('\n') })
    if (result.changes !== 1) throw new Error(`provenance: no narinfo ${record.hashPart} to attach it to`)
  }

  ofPath (hashPart: string): ProvenanceRow[] {
    return this.stmts.ofPath.all(hashPart).map(row => ({ ...row, keyNames: row.keyNames === '' ? [] : row.keyNames.split('\n') }))
  }

  /** Paths created (not merged) at or after `since` that are still in the cache. */
  createdSince (since: number): number {
    return this.stmts.createdSince.get(since)?.n ?? 0
  }

  /**
   * Appends entries and trims the log to its newest `keep` rows, in one transaction whose commit
   * does not wait for the disk (the log is not worth an fsync per batch; see cache/audit-log.ts).
   */
  appendAudit (records: AuditRecord[], keep: number): void {
    this.db.pragma('synchronous = NORMAL')
    try {
      this.db.transaction(() => {
        for (const r of records) this.stmts.insertAudit.run(r)
        this.stmts.capAudit.run(keep)
      }).immediate()
    } finally {
      this.db.pragma('synchronous = FULL')
    }
  }

  /** The newest `limit` matching entries, oldest first. */
  queryAudit (filter: AuditFilter): AuditRow[] {
    return this.stmts.queryAudit.all({
      since: filter.since ?? 0,
      hashPart: filter.hashPart ?? null,
      fileHash: filter.fileHash ?? null,
      tokenId: filter.tokenId ?? null,
      limit: filter.limit ?? -1
    })
  }
}
