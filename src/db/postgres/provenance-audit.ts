/** Provenance (who put each path into the cache) and the audit log, in PostgreSQL. */
import type { AuditRow, AuditStore, ProvenanceRow, ProvenanceStore } from '../metadata-store.js'
import type { PgPool } from './pool.js'

export function pgProvenanceStore (pool: PgPool): ProvenanceStore {
  return {
    ofPath: async (hashPart) => (await pool.query<Omit<ProvenanceRow, 'keyNames'> & { keyNames: string }>(
      `SELECT p.accepted_at AS "acceptedAt", p.outcome, p.token_id AS "tokenId", p.token_name AS "tokenName",
              p.key_names AS "keyNames", p.client_address AS "clientAddress", p.upstream
       FROM provenance p JOIN narinfos n ON n.id = p.narinfo_id WHERE n.hash_part = $1 ORDER BY p.id`, [hashPart]))
      .rows.map(row => ({ ...row, keyNames: row.keyNames === '' ? [] : row.keyNames.split('\n') })),

    createdSince: async (since) => (await pool.query<{ n: number }>(
      "SELECT count(*) AS n FROM provenance WHERE accepted_at >= $1 AND outcome = 'created'", [since])).rows[0]?.n ?? 0
  }
}

export function pgAuditStore (pool: PgPool): AuditStore {
  return {
    append: async (records, keep) => {
      if (records.length === 0) return
      const column = <K extends keyof typeof records[number]>(key: K): Array<typeof records[number][K]> => records.map(r => r[key])
      // The log is not worth a wait for the disk per batch (as with SQLite).
      await pool.transaction(async (tx) => {
        await tx.query(
          `INSERT INTO audit_log (at, token_id, token_name, client_address, method, subject, hash_part, file_hash, outcome, status, code, reason)
           SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
                                $9::text[], $10::int[], $11::text[], $12::text[])`,
          [column('at'), column('tokenId'), column('tokenName'), column('clientAddress'), column('method'), column('subject'),
            column('hashPart'), column('fileHash'), column('outcome'), column('status'), column('code'), column('reason')])
        // The newest `keep` rows stay; ids only grow.
        await tx.query('DELETE FROM audit_log WHERE id <= (SELECT max(id) FROM audit_log) - $1', [keep])
      }, { durableWithNext: true })
    },

    query: async (filter) => (await pool.query<AuditRow>(
      `SELECT * FROM (
         SELECT id, at, token_id AS "tokenId", token_name AS "tokenName", client_address AS "clientAddress", method, subject,
                hash_part AS "hashPart", file_hash AS "fileHash", outcome, status, code, reason
         FROM audit_log
         WHERE at >= $1
           AND ($4::bigint IS NULL OR token_id = $4)
           AND (($2::text IS NULL AND $3::text IS NULL) OR hash_part = $2 OR file_hash = $3)
         ORDER BY id DESC LIMIT $5) newest
       ORDER BY id`,
      [filter.since ?? 0, filter.hashPart ?? null, filter.fileHash ?? null, filter.tokenId ?? null, filter.limit ?? null])).rows
  }
}
