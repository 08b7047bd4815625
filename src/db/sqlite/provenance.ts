/**
 * ProvenanceStore and AuditStore on SQLite: who put each path into the cache, with which trusted
 * keys (written with the narinfo itself, store.ts), and the audit log of every write and refusal.
 * The rules around them live in src/cache/provenance.ts and src/cache/audit-log.ts; the tables in
 * migrations/0003_provenance_audit.sql.
 */
import type { Db } from '../database.js'
import type { AuditFilter, AuditRecord, AuditRow, AuditStore, ProvenanceRow, ProvenanceStore } from '../metadata-store.js'

type ProvenanceSqlRow = Omit<ProvenanceRow, 'keyNames'> & { keyNames: string }

export class SqliteProvenance implements ProvenanceStore {
  private readonly stmts

  constructor (db: Db) {
    this.stmts = {
      ofPath: db.prepare<[string], ProvenanceSqlRow>(
        `SELECT p.accepted_at AS acceptedAt, p.outcome, p.token_id AS tokenId, p.token_name AS tokenName,
                p.key_names AS keyNames, p.client_address AS clientAddress, p.upstream
         FROM provenance p JOIN narinfos n ON n.id = p.narinfo_id WHERE n.hash_part = ? ORDER BY p.id`),
      createdSince: db.prepare<[number], { n: number }>(
        "SELECT count(*) AS n FROM provenance WHERE accepted_at >= ? AND outcome = 'created'")
    }
  }

  async ofPath (hashPart: string): Promise<ProvenanceRow[]> {
    return this.stmts.ofPath.all(hashPart).map(row => ({ ...row, keyNames: row.keyNames === '' ? [] : row.keyNames.split('\n') }))
  }

  async createdSince (since: number): Promise<number> {
    return this.stmts.createdSince.get(since)?.n ?? 0
  }
}

export class SqliteAudit implements AuditStore {
  private readonly db: Db
  private readonly stmts

  constructor (db: Db) {
    this.db = db
    this.stmts = {
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

  /**
   * One transaction whose commit does not wait for the disk: the log is not worth an fsync per
   * batch (see cache/audit-log.ts).
   */
  async append (records: AuditRecord[], keep: number): Promise<void> {
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

  async query (filter: AuditFilter): Promise<AuditRow[]> {
    return this.stmts.queryAudit.all({
      since: filter.since ?? 0,
      hashPart: filter.hashPart ?? null,
      fileHash: filter.fileHash ?? null,
      tokenId: filter.tokenId ?? null,
      limit: filter.limit ?? -1
    })
  }
}
