/** The read-only queries of the pages for people (cache/browse.ts), in PostgreSQL. */
import type { BrowseStore, PathHit, PathSummary, PinState } from '../metadata-store.js'
import type { PgPool } from './pool.js'

/** LIKE patterns are built from client text: its wildcards are matched literally. */
function likeLiteral (text: string): string {
  return text.replace(/[\\%_]/g, c => '\\' + c)
}

const HIT_COLUMNS = 'hash_part AS "hashPart", store_path AS "storePath", nar_size AS "narSize"'

export function pgBrowseStore (pool: PgPool): BrowseStore {
  return {
    totals: async () => {
      const row = (await pool.query<{ paths: number, narFiles: number, narBytes: number }>(
        `SELECT (SELECT count(*) FROM narinfos) AS paths, count(*) AS "narFiles", coalesce(sum(file_size), 0) AS "narBytes"
         FROM nar_files WHERE state = 'live'`)).rows[0]
      return row ?? { paths: 0, narFiles: 0, narBytes: 0 }
    },
    narFilesFetchedSince: async (since) => (await pool.query<{ n: number }>(
      'SELECT count(*) AS n FROM nar_files WHERE last_accessed_at >= $1 AND last_accessed_at > created_at', [since])).rows[0]?.n ?? 0,
    byHashPrefix: async (prefix, limit) => (await pool.query<PathHit>(
      `SELECT ${HIT_COLUMNS} FROM narinfos WHERE hash_part >= $1 COLLATE "C" ORDER BY hash_part COLLATE "C" LIMIT $2`, [prefix, limit]))
      .rows.filter(hit => hit.hashPart.startsWith(prefix)),
    // ILIKE: case-insensitive like SQLite's LIKE (which folds ASCII only).
    byName: async (text, limit) => (await pool.query<PathHit>(
      `SELECT ${HIT_COLUMNS} FROM narinfos WHERE substr(store_path, 45) ILIKE $1 ESCAPE '\\'
       ORDER BY substr(store_path, 45) COLLATE "C", hash_part COLLATE "C" LIMIT $2`, [`%${likeLiteral(text)}%`, limit])).rows,
    summary: async (hashPart) => (await pool.query<PathSummary>(
      `SELECT n.hash_part AS "hashPart", n.store_path AS "storePath", n.narinfo, n.nar_size AS "narSize", n.created_at AS "createdAt",
              f.file_hash AS "fileHash", f.file_size AS "fileSize", f.compression
       FROM narinfos n JOIN nar_files f ON f.id = n.nar_file_id WHERE n.hash_part = $1`, [hashPart])).rows[0],
    referrers: async (hashPart, limit) => (await pool.query<{ hashPart: string, storePath: string }>(
      `SELECT n.hash_part AS "hashPart", n.store_path AS "storePath" FROM narinfo_refs r JOIN narinfos n ON n.id = r.narinfo_id
       WHERE r.ref_hash_part = $1 AND n.hash_part <> r.ref_hash_part ORDER BY n.store_path COLLATE "C" LIMIT $2`, [hashPart, limit])).rows,
    references: async (hashPart) => (await pool.query<{ baseName: string, present: boolean }>(
      `SELECT r.ref_base_name AS "baseName", EXISTS (SELECT 1 FROM narinfos m WHERE m.hash_part = r.ref_hash_part) AS present
       FROM narinfo_refs r JOIN narinfos n ON n.id = r.narinfo_id WHERE n.hash_part = $1 ORDER BY r.ref_base_name COLLATE "C"`, [hashPart])).rows,
    pin: async (hashPart) => (await pool.query<PinState>(
      'SELECT keep_until AS "keepUntil", note FROM pins WHERE hash_part = $1', [hashPart])).rows[0]
  }
}
