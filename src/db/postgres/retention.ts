/** Last-use times, pins, gc's snapshot and the record of collections, in PostgreSQL. */
import type { GcEdgeRow, GcPathRow, GcRunRow, PinRow, RetentionStore } from '../metadata-store.js'
import type { PgPool } from './pool.js'

/** A read within this long of the recorded last use is not written again (as the SQLite store). */
const TOUCH_RESOLUTION_MS = 60_000

const GC_RUN_COLUMNS = `started_at AS "startedAt", finished_at AS "finishedAt", trigger, store_paths AS "storePaths",
  nar_files AS "narFiles", bytes, remaining_bytes AS "remainingBytes"`

export function pgRetentionStore (pool: PgPool): RetentionStore {
  return {
    touch: async (narinfoHashParts, narFileHashes, now) => {
      const narinfos = [...narinfoHashParts]
      const files = [...narFileHashes]
      if (narinfos.length === 0 && files.length === 0) return
      const before = now - TOUCH_RESOLUTION_MS
      // Times never move back: several replicas flush the same keys in any order.
      await pool.transaction(async (tx) => {
        if (narinfos.length > 0) {
          await tx.query('UPDATE narinfos SET last_accessed_at = $1 WHERE hash_part = ANY($2) AND last_accessed_at < $3', [now, narinfos, before])
        }
        if (files.length > 0) {
          await tx.query('UPDATE nar_files SET last_accessed_at = $1 WHERE file_hash = ANY($2) AND last_accessed_at < $3', [now, files, before])
        }
      }, { durableWithNext: true })
    },

    lastUse: async (hashPart) => (await pool.query<{ narinfo: number, narFile: number }>(
      `SELECT n.last_accessed_at AS narinfo, f.last_accessed_at AS "narFile"
       FROM narinfos n JOIN nar_files f ON f.id = n.nar_file_id WHERE n.hash_part = $1`, [hashPart])).rows[0],

    setLastUse: async (narinfoHashParts, narFileHashes, at) => {
      const narinfos = [...narinfoHashParts]
      const files = [...narFileHashes]
      await pool.transaction(async (tx) => {
        if (narinfos.length > 0) await tx.query('UPDATE narinfos SET last_accessed_at = $1 WHERE hash_part = ANY($2)', [at, narinfos])
        if (files.length > 0) await tx.query('UPDATE nar_files SET last_accessed_at = $1 WHERE file_hash = ANY($2)', [at, files])
      })
    },

    snapshot: async (now) => await pool.transaction(async (tx) => ({
      paths: (await tx.query<GcPathRow>(
        `SELECT n.id, n.hash_part AS "hashPart", n.nar_file_id AS "narFileId",
                greatest(n.last_accessed_at, f.last_accessed_at) AS "lastUse",
                (EXISTS (SELECT 1 FROM pins p WHERE p.hash_part = n.hash_part AND (p.keep_until IS NULL OR p.keep_until > $1)))::int AS pinned,
                (SELECT u.upstream FROM upstream_narinfos u
                 WHERE u.hash_part = n.hash_part AND u.file_hash = f.file_hash AND u.refused_at IS NULL) AS upstream
         FROM narinfos n JOIN nar_files f ON f.id = n.nar_file_id`, [now])).rows,
      edges: (await tx.query<GcEdgeRow>(
        `SELECT r.narinfo_id AS referrer, n.id AS reference FROM narinfo_refs r JOIN narinfos n ON n.hash_part = r.ref_hash_part
         WHERE n.id <> r.narinfo_id`)).rows,
      narFiles: (await tx.query<{ id: number, fileSize: number }>(
        "SELECT id, file_size AS \"fileSize\" FROM nar_files WHERE state = 'live'")).rows
    }), { snapshot: true }),

    storePathsOf: async (ids) => new Map((await pool.query<{ id: number, storePath: string }>(
      'SELECT id, store_path AS "storePath" FROM narinfos WHERE id = ANY($1)', [ids])).rows.map(r => [r.id, r.storePath])),

    totalNarBytes: async () => (await pool.query<{ bytes: number }>(
      "SELECT coalesce(sum(file_size), 0) AS bytes FROM nar_files WHERE state = 'live'")).rows[0]?.bytes ?? 0,

    addPin: async (pin, now) => {
      await pool.query(
        `INSERT INTO pins (hash_part, store_path, keep_until, created_at, note) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (hash_part) DO UPDATE SET store_path = excluded.store_path, keep_until = excluded.keep_until, note = excluded.note`,
        [pin.hashPart, pin.storePath, pin.keepUntil, now, pin.note])
    },
    removePin: async (hashPart) => (await pool.query('DELETE FROM pins WHERE hash_part = $1', [hashPart])).rowCount === 1,
    listPins: async () => (await pool.query<PinRow>(
      `SELECT hash_part AS "hashPart", store_path AS "storePath", keep_until AS "keepUntil", created_at AS "createdAt", note
       FROM pins ORDER BY store_path COLLATE "C"`)).rows,
    deleteExpiredPins: async (now) => (await pool.query('DELETE FROM pins WHERE keep_until IS NOT NULL AND keep_until <= $1', [now])).rowCount ?? 0,

    recordGcRun: async (run: GcRunRow) => {
      await pool.query(
        `INSERT INTO gc_runs (started_at, finished_at, trigger, store_paths, nar_files, bytes, remaining_bytes)
         VALUES ($1, $2, $3, $4, $5, $6, $7)`,
        [run.startedAt, run.finishedAt, run.trigger, run.storePaths, run.narFiles, run.bytes, run.remainingBytes])
    },
    lastGcRun: async () => (await pool.query<GcRunRow>(`SELECT ${GC_RUN_COLUMNS} FROM gc_runs ORDER BY id DESC LIMIT 1`)).rows[0],
    gcTotals: async () => {
      const row = (await pool.query<{ runs: number, storePaths: number, narFiles: number, bytes: number }>(
        `SELECT count(*) AS runs, coalesce(sum(store_paths), 0) AS "storePaths", coalesce(sum(nar_files), 0) AS "narFiles",
                coalesce(sum(bytes), 0) AS bytes FROM gc_runs`)).rows[0]
      return row ?? { runs: 0, storePaths: 0, narFiles: 0, bytes: 0 }
    }
  }
}
