/**
 * NAR file rows in PostgreSQL and the state protocol of seams.md (pending → live → deleting →
 * gone), kept safe under READ COMMITTED by row locks:
 *
 * - A narinfo insert locks its NAR file's row FOR SHARE before it checks that the file is live
 *   (narinfos.ts), and keeps the lock until it commits.
 * - Whatever marks a file 'deleting' first locks the candidate rows FOR UPDATE in one statement,
 *   and only then, in a new statement (a new snapshot, so it sees every insert that held a lock
 *   before it), checks that no narinfo names them and changes their state.
 *
 * So either the narinfo's transaction locked first, and the marking sees its narinfo and leaves
 * the file; or the marking locked first, and the insert then reads 'deleting' and is refused.
 * Single statements (claim, markLive, forget) need no more: PostgreSQL re-checks an UPDATE's
 * WHERE against the row's newest version after waiting for its lock.
 */
import type { ClaimOutcome, NarFileFacts, NarFileRow, NarFileStore } from '../metadata-store.js'
import type { ChangeListener } from './change-listener.js'
import type { PgPool, Tx } from './pool.js'
import { Remembered } from './remembered.js'

export const NAR_FILE_COLUMNS = `id, file_hash AS "fileHash", file_size AS "fileSize", compression, nar_hash AS "narHash",
  nar_size AS "narSize", state`
const UNNAMED = 'NOT EXISTS (SELECT 1 FROM narinfos n WHERE n.nar_file_id = f.id)'

/** NAR file rows remembered for peekLive (the fast NAR read path): about 1 MB. */
const REMEMBERED_NAR_FILES = 5000

/**
 * Locks the rows FOR UPDATE (in id order, so two markers cannot deadlock), then marks 'deleting'
 * those that are still unnamed and pass `condition` (SQL over f, with $2… as `values`). In a
 * transaction; returns the marked rows.
 */
export async function markDeletingIfUnnamed (tx: Tx, ids: number[], condition: string, values: unknown[] = []): Promise<NarFileRow[]> {
  if (ids.length === 0) return []
  const locked = await tx.query<{ id: number }>('SELECT id FROM nar_files WHERE id = ANY($1) ORDER BY id FOR UPDATE', [ids])
  if (locked.rows.length === 0) return []
  const marked = await tx.query<NarFileRow>(
    `UPDATE nar_files f SET state = 'deleting' WHERE f.id = ANY($1) AND (${condition}) AND ${UNNAMED}
     RETURNING ${NAR_FILE_COLUMNS}`, [locked.rows.map(r => r.id), ...values])
  return marked.rows.sort((a, b) => a.id - b.id)
}

export function pgNarFileStore (pool: PgPool, listener: ChangeListener): NarFileStore {
  const remembered = new Remembered<NarFileRow | null>(REMEMBERED_NAR_FILES)

  return {
    get: async (fileHash) => {
      const generation = listener.current()
      const row = (await pool.query<NarFileRow>(`SELECT ${NAR_FILE_COLUMNS} FROM nar_files WHERE file_hash = $1`, [fileHash])).rows[0]
      if (listener.stillAt(generation)) remembered.set(fileHash, row?.state === 'live' ? row : null, generation)
      return row
    },

    getById: async (id) => (await pool.query<NarFileRow>(`SELECT ${NAR_FILE_COLUMNS} FROM nar_files WHERE id = $1`, [id])).rows[0],

    peekLive: (fileHash) => remembered.get(fileHash, listener.current()),

    claim: async (facts: NarFileFacts, now: number): Promise<ClaimOutcome> => {
      // One statement: ON CONFLICT sees (and locks) the newest version of an existing row, so a
      // row being marked 'deleting' is waited for and then reported, never renewed.
      const row = await pool.transaction(async (tx) => (await tx.query<NarFileRow>(
        `INSERT INTO nar_files AS f (file_hash, file_size, compression, nar_hash, nar_size, created_at, last_accessed_at, state)
         VALUES ($1, $2, $3, $4, $5, $6, $6, 'pending')
         ON CONFLICT (file_hash) DO UPDATE SET created_at = greatest(f.created_at, excluded.created_at)
           WHERE f.state <> 'deleting'
         RETURNING ${NAR_FILE_COLUMNS}`,
        [facts.fileHash, facts.fileSize, facts.compression, facts.narHash, facts.narSize, now])).rows[0],
      { durableWithNext: true })
      if (row === undefined) return { kind: 'deleting' }
      return row.state === 'live' ? { kind: 'live', row } : { kind: 'pending', row }
    },

    markLive: async (id) => {
      const result = await pool.transaction(async (tx) => await tx.query(
        "UPDATE nar_files SET state = 'live' WHERE id = $1 AND state IN ('pending', 'live')", [id]), { durableWithNext: true })
      listener.changed()
      return result.rowCount === 1
    },

    renew: async (fileHash, now) => (await pool.query<NarFileRow>(
      `UPDATE nar_files SET created_at = greatest(created_at, $2) WHERE file_hash = $1 AND state = 'live'
       RETURNING ${NAR_FILE_COLUMNS}`, [fileHash, now])).rows[0],

    markUnnamedDeleting: async (createdBefore, pendingBefore, options = {}) => {
      // Unnamed live files past the grace, and pending ones past the long grace (crashed uploads).
      const due = (created: string, pending: string): string =>
        `(f.state = 'live' AND f.created_at < ${created}) OR (f.state = 'pending' AND f.created_at < ${pending})`
      if (options.dryRun === true) {
        return (await pool.query<NarFileRow>(
          `SELECT ${NAR_FILE_COLUMNS} FROM nar_files f WHERE ((${due('$1', '$2')}) AND ${UNNAMED}) OR f.state = 'deleting'
           ORDER BY f.id`, [createdBefore, pendingBefore])).rows
      }
      const rows = await pool.transaction(async (tx) => {
        const candidates = await tx.query<{ id: number }>(
          `SELECT f.id FROM nar_files f WHERE (${due('$1', '$2')}) AND ${UNNAMED}`, [createdBefore, pendingBefore])
        const marked = await markDeletingIfUnnamed(tx, candidates.rows.map(r => r.id), due('$2', '$3'), [createdBefore, pendingBefore])
        // Rows an earlier, interrupted removal left 'deleting': their blobs may still be there.
        const earlier = await tx.query<NarFileRow>(
          `SELECT ${NAR_FILE_COLUMNS} FROM nar_files WHERE state = 'deleting' AND NOT (id = ANY($1)) ORDER BY id`, [marked.map(r => r.id)])
        return [...earlier.rows, ...marked].sort((a, b) => a.id - b.id)
      })
      listener.changed()
      return rows
    },

    forget: async (id) => {
      const result = await pool.query(`DELETE FROM nar_files f WHERE f.id = $1 AND f.state = 'deleting' AND ${UNNAMED}`, [id])
      listener.changed()
      return result.rowCount === 1
    },

    page: async (afterId, limit) => (await pool.query<NarFileRow>(
      `SELECT ${NAR_FILE_COLUMNS} FROM nar_files WHERE id > $1 ORDER BY id LIMIT $2`, [afterId, limit])).rows,

    totals: async () => {
      const row = (await pool.query<{ files: number, bytes: number }>(
        'SELECT count(*) AS files, coalesce(sum(file_size), 0) AS bytes FROM nar_files')).rows[0]
      return row ?? { files: 0, bytes: 0 }
    }
  }
}
