/**
 * MetadataLoad on PostgreSQL: rows dumped from another backend (the embedded SQLite file) written
 * as they were, for `narwhal export --database` (cache/move-cache.ts). Every call is one
 * transaction and idempotent: rows are matched by their natural keys, and the audit log and gc
 * history (which have none) by the high-water marks of the move's cache_moves row, advanced in the
 * same transaction as the rows they count. So a move killed anywhere is finished by the next run.
 *
 * Narinfos keep the guards of an insert (narinfos.ts): references held here (locked FOR SHARE), a
 * live NAR file. Their NAR file rows are inserted live: the caller put the blobs in place first.
 */
import type {
  AuditRow, DumpedAuxFile, DumpedGcRun, DumpedNarFile, DumpedNarinfo, LoadCounts, LoadNarinfoOutcome, MetadataLoad,
  MoveRecord, PinRow, TableCounts
} from '../metadata-store.js'
import type { PgPool, Tx } from './pool.js'

const STORE_DIR = '/nix/store/'
const MOVE_COLUMNS = `id, source, started_at AS "startedAt", finished_at AS "finishedAt", audit_through AS "auditThrough",
  gc_runs_through AS "gcRunsThrough"`

const counts = (): LoadCounts => ({ created: 0, present: 0 })

/** Adds one to created or present by whether the statement inserted a row. */
function tally (c: LoadCounts, rowCount: number | null): void {
  if ((rowCount ?? 0) > 0) c.created++
  else c.present++
}

/** Token ids of the source mapped to ids here; one the source does not know becomes null. */
function mapToken (tokenIds: Map<number, number>, id: number | null): number | null {
  return id === null ? null : tokenIds.get(id) ?? null
}

async function moveFor (tx: Tx, id: number): Promise<MoveRecord> {
  const move = (await tx.query<MoveRecord>(`SELECT ${MOVE_COLUMNS} FROM cache_moves WHERE id = $1 FOR UPDATE`, [id])).rows[0]
  if (move === undefined) throw new Error(`cache_moves has no move ${id}`)
  return move
}

/** The references (other than itself) that neither a narinfo nor a served upstream record here holds; locks those found. */
async function missingReferences (tx: Tx, row: DumpedNarinfo): Promise<string[]> {
  const refs = row.references.filter(r => r.hashPart !== row.hashPart)
  if (refs.length === 0) return []
  const held = new Set((await tx.query<{ storePath: string }>(
    'SELECT store_path AS "storePath" FROM narinfos WHERE hash_part = ANY($1) ORDER BY id FOR SHARE',
    [refs.map(r => r.hashPart)])).rows.map(r => r.storePath))
  let missing = refs.filter(r => !held.has(STORE_DIR + r.baseName))
  if (missing.length > 0) {
    const upstream = new Set((await tx.query<{ storePath: string }>(
      `SELECT store_path AS "storePath" FROM upstream_narinfos WHERE hash_part = ANY($1) AND refused_at IS NULL
       ORDER BY hash_part FOR SHARE`, [missing.map(r => r.hashPart)])).rows.map(r => r.storePath))
    missing = missing.filter(r => !upstream.has(STORE_DIR + r.baseName))
  }
  return missing.map(r => r.baseName)
}

/** How the narinfo this hash part has here compares with `row`, or undefined when there is none. */
async function compareExisting (tx: Tx, row: DumpedNarinfo): Promise<LoadNarinfoOutcome | undefined> {
  const existing = (await tx.query<{ storePath: string, narHash: string }>(
    'SELECT store_path AS "storePath", nar_hash AS "narHash" FROM narinfos WHERE hash_part = $1', [row.hashPart])).rows[0]
  if (existing === undefined) return undefined
  return existing.storePath === row.storePath && existing.narHash === row.narHash
    ? { kind: 'present' }
    : { kind: 'differs', storePath: existing.storePath, narHash: existing.narHash }
}

async function loadNarinfo (tx: Tx, row: DumpedNarinfo & { narFile: DumpedNarFile }, tokenIds: Map<number, number>): Promise<LoadNarinfoOutcome> {
  const existing = await compareExisting(tx, row)
  if (existing !== undefined) return existing
  const missing = await missingReferences(tx, row)
  if (missing.length > 0) return { kind: 'missing-references', baseNames: missing }

  const f = row.narFile
  await tx.query(
    `INSERT INTO nar_files (file_hash, file_size, compression, nar_hash, nar_size, created_at, last_accessed_at, state)
     VALUES ($1, $2, $3, $4, $5, $6, $7, 'live') ON CONFLICT (file_hash) DO NOTHING`,
    [f.fileHash, f.fileSize, f.compression, f.narHash, f.narSize, f.createdAt, f.lastAccessedAt])
  const file = (await tx.query<{ id: number, state: string }>(
    'SELECT id, state FROM nar_files WHERE file_hash = $1 FOR SHARE', [f.fileHash])).rows[0]
  if (file === undefined || file.state !== 'live') return { kind: 'nar-file-busy' }

  const inserted = (await tx.query<{ id: number }>(
    `INSERT INTO narinfos (hash_part, store_path, nar_file_id, nar_hash, nar_size, deriver, ca, sigs, narinfo, created_at, last_accessed_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT (hash_part) DO NOTHING RETURNING id`,
    [row.hashPart, row.storePath, file.id, row.narHash, row.narSize, row.deriver, row.ca, row.sigs.join('\n'), row.narinfo,
      row.createdAt, row.lastAccessedAt])).rows[0]
  // A replica's upload of the same path committed since the check above: it stands.
  if (inserted === undefined) return await compareExisting(tx, row) ?? { kind: 'present' }
  if (row.references.length > 0) {
    await tx.query(
      `INSERT INTO narinfo_refs (narinfo_id, ref_hash_part, ref_base_name)
       SELECT $1, h, b FROM unnest($2::text[], $3::text[]) AS r(h, b) ON CONFLICT DO NOTHING`,
      [inserted.id, row.references.map(r => r.hashPart), row.references.map(r => r.baseName)])
  }
  for (const p of row.provenance) {
    await tx.query(
      `INSERT INTO provenance (narinfo_id, accepted_at, outcome, token_id, token_name, key_names, client_address, upstream)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
      [inserted.id, p.acceptedAt, p.outcome, mapToken(tokenIds, p.tokenId), p.tokenName, p.keyNames.join('\n'), p.clientAddress, p.upstream])
  }
  return { kind: 'created' }
}

export function pgMetadataLoad (pool: PgPool): MetadataLoad {
  return {
    contents: async () => (await pool.query<TableCounts>(
      `SELECT (SELECT count(*) FROM narinfos)::int AS narinfos, (SELECT count(*) FROM nar_files)::int AS "narFiles",
              (SELECT count(*) FROM tokens)::int AS tokens, (SELECT count(*) FROM pins)::int AS pins,
              (SELECT count(*) FROM aux_files)::int AS "auxFiles", (SELECT count(*) FROM upstream_narinfos)::int AS "upstreamRecords",
              (SELECT count(*) FROM audit_log)::int AS "auditEntries", (SELECT count(*) FROM gc_runs)::int AS "gcRuns"`)).rows[0] as TableCounts,

    moves: async () => (await pool.query<MoveRecord>(`SELECT ${MOVE_COLUMNS} FROM cache_moves ORDER BY id`)).rows,

    beginMove: async (source, now) => await pool.transaction(async (tx) => {
      await tx.query('INSERT INTO cache_moves (source, started_at) VALUES ($1, $2) ON CONFLICT (source) DO NOTHING', [source, now])
      return (await tx.query<MoveRecord>(`SELECT ${MOVE_COLUMNS} FROM cache_moves WHERE source = $1`, [source])).rows[0] as MoveRecord
    }),

    finishMove: async (id, now) => {
      await pool.query('UPDATE cache_moves SET finished_at = $2 WHERE id = $1', [id, now])
    },

    tokens: async (rows) => await pool.transaction(async (tx) => {
      // Nobody else takes an id while this picks them (`narwhal token create` at a replica waits).
      await tx.query('LOCK TABLE tokens IN SHARE ROW EXCLUSIVE MODE')
      const ids = new Map<number, number>()
      const c = counts()
      let explicit = false
      for (const t of rows) {
        const here = (await tx.query<{ id: number, revokedAt: number | null }>(
          'SELECT id, revoked_at AS "revokedAt" FROM tokens WHERE token_hash = $1', [t.tokenHash])).rows[0]
        if (here !== undefined) {
          if (here.revokedAt === null && t.revokedAt !== null) await tx.query('UPDATE tokens SET revoked_at = $2 WHERE id = $1', [here.id, t.revokedAt])
          ids.set(t.id, here.id)
          c.present++
          continue
        }
        // The same id when it is free, so `narwhal token revoke ID` and the audit log keep meaning the same token.
        const free = (await tx.query('SELECT 1 FROM tokens WHERE id = $1', [t.id])).rows.length === 0
        const inserted = (await tx.query<{ id: number }>(
          free
            ? 'INSERT INTO tokens (id, name, scope, token_hash, created_at, expires_at, revoked_at) VALUES ($7, $1, $2, $3, $4, $5, $6) RETURNING id'
            : 'INSERT INTO tokens (name, scope, token_hash, created_at, expires_at, revoked_at) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id',
          [t.name, t.scope, t.tokenHash, t.createdAt, t.expiresAt, t.revokedAt, ...(free ? [t.id] : [])])).rows[0]
        if (inserted === undefined) throw new Error('tokens: INSERT returned no id')
        explicit ||= free
        ids.set(t.id, inserted.id)
        c.created++
      }
      // Ids given explicitly leave the identity's sequence behind: the next token must not collide.
      if (explicit) await tx.query("SELECT setval(pg_get_serial_sequence('tokens', 'id'), (SELECT max(id) FROM tokens))")
      return { ids, counts: c }
    }),

    upstreamRecords: async (rows) => await pool.transaction(async (tx) => {
      const c = counts()
      for (const r of rows) {
        tally(c, (await tx.query(
          `INSERT INTO upstream_narinfos (hash_part, store_path, upstream, nar_url, file_hash, file_size, compression, nar_hash,
             nar_size, refs, narinfo, created_at, refused_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) ON CONFLICT (hash_part) DO NOTHING`,
          [r.hashPart, r.storePath, r.upstream, r.narUrl, r.fileHash, r.fileSize, r.compression, r.narHash, r.narSize,
            r.references.join(' '), r.narinfo, r.createdAt, r.refusedAt])).rowCount)
      }
      return c
    }),

    narinfos: async (rows, tokenIds) => await pool.transaction(async (tx) => {
      const outcomes: LoadNarinfoOutcome[] = []
      for (const row of rows) outcomes.push(await loadNarinfo(tx, row, tokenIds))
      return outcomes
    }),

    pins: async (rows: PinRow[]) => await pool.transaction(async (tx) => {
      const c = counts()
      for (const p of rows) {
        tally(c, (await tx.query(
          `INSERT INTO pins (hash_part, store_path, keep_until, created_at, note) VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (hash_part) DO NOTHING`, [p.hashPart, p.storePath, p.keepUntil, p.createdAt, p.note])).rowCount)
      }
      return c
    }),

    auxFiles: async (rows: DumpedAuxFile[]) => await pool.transaction(async (tx) => {
      const c = counts()
      for (const a of rows) {
        tally(c, (await tx.query(
          `INSERT INTO aux_files (kind, name, content_type, content_encoding, body, created_at) VALUES ($1, $2, $3, $4, $5, $6)
           ON CONFLICT (kind, name) DO NOTHING`, [a.kind, a.name, a.contentType, a.contentEncoding, a.body, a.createdAt])).rowCount)
      }
      return c
    }),

    audit: async (moveId, rows: AuditRow[], tokenIds) => await pool.transaction(async (tx) => {
      const move = await moveFor(tx, moveId)
      const c = counts()
      let through = move.auditThrough
      for (const r of rows) {
        if (r.id <= move.auditThrough) { c.present++; continue }
        await tx.query(
          `INSERT INTO audit_log (at, token_id, token_name, client_address, method, subject, hash_part, file_hash, outcome, status, code, reason)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`,
          [r.at, mapToken(tokenIds, r.tokenId), r.tokenName, r.clientAddress, r.method, r.subject, r.hashPart, r.fileHash, r.outcome,
            r.status, r.code, r.reason])
        c.created++
        through = Math.max(through, r.id)
      }
      await tx.query('UPDATE cache_moves SET audit_through = $2 WHERE id = $1', [moveId, through])
      return c
    }),

    gcRuns: async (moveId, rows: DumpedGcRun[]) => await pool.transaction(async (tx) => {
      const move = await moveFor(tx, moveId)
      const c = counts()
      let through = move.gcRunsThrough
      for (const r of rows) {
        if (r.id <= move.gcRunsThrough) { c.present++; continue }
        await tx.query(
          `INSERT INTO gc_runs (started_at, finished_at, trigger, store_paths, nar_files, bytes, remaining_bytes)
           VALUES ($1, $2, $3, $4, $5, $6, $7)`,
          [r.startedAt, r.finishedAt, r.trigger, r.storePaths, r.narFiles, r.bytes, r.remainingBytes])
        c.created++
        through = Math.max(through, r.id)
      }
      await tx.query('UPDATE cache_moves SET gc_runs_through = $2 WHERE id = $1', [moveId, through])
      return c
    })
  }
}
