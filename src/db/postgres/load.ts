/**
 * MetadataLoad on PostgreSQL: rows dumped from another backend (the embedded SQLite file) written
 * as they were, for `narwhal export --database` (cache/move-cache.ts). Every call is one
 * transaction and idempotent: rows are matched by their natural keys, and the audit log and gc
 * history (which have none) by the high-water marks of the move's cache_moves row, advanced in the
 * same transaction as the rows they count. So a move killed anywhere is finished by the next run.
 *
 * Narinfos keep the guards of an insert (narinfos.ts): references held here (locked FOR SHARE) or
 * created earlier in the batch, a live NAR file. Their NAR file rows are inserted live: the caller
 * put the blobs in place first. Each batch is a few set-based statements (unnest), not a few per row,
 * for every table but tokens (few, and each needs its id decided).
 */
import type {
  AuditRow, DumpedAuxFile, DumpedGcRun, DumpedNarFile, DumpedNarinfo, DumpedToken, LoadCounts, LoadNarinfoOutcome, MetadataLoad,
  MoveRecord, PinRow, TableCounts
} from '../metadata-store.js'
import type { PgPool, Tx } from './pool.js'

const STORE_DIR = '/nix/store/'
const MOVE_COLUMNS = `id, source, started_at AS "startedAt", finished_at AS "finishedAt", audit_through AS "auditThrough",
  gc_runs_through AS "gcRunsThrough"`

const counts = (): LoadCounts => ({ created: 0, present: 0 })

/** A batch of `rows` rows inserted with ON CONFLICT DO NOTHING: those not inserted were here already. */
function inBatch (rows: number, inserted: number | null): LoadCounts {
  return { created: inserted ?? 0, present: rows - (inserted ?? 0) }
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

type ReadyNarinfo = DumpedNarinfo & { narFile: DumpedNarFile }

/** A path as this database holds it: a narinfo, or (for references only) a served upstream record. */
interface Held { storePath: string, narHash: string | null }

/** The narinfos and served upstream records holding any of these hash parts, locked FOR SHARE (so a gc waits for this commit). */
async function heldPaths (tx: Tx, hashParts: string[]): Promise<{ narinfos: Map<string, Held>, upstream: Set<string> }> {
  const narinfos = new Map((await tx.query<Held & { hashPart: string }>(
    `SELECT hash_part AS "hashPart", store_path AS "storePath", nar_hash AS "narHash" FROM narinfos
     WHERE hash_part = ANY($1) ORDER BY id FOR SHARE`, [hashParts])).rows.map(r => [r.hashPart, r]))
  const notNarinfos = hashParts.filter(h => !narinfos.has(h))
  const upstream = notNarinfos.length === 0
    ? new Set<string>()
    : new Set((await tx.query<{ storePath: string }>(
      `SELECT store_path AS "storePath" FROM upstream_narinfos WHERE hash_part = ANY($1) AND refused_at IS NULL
       ORDER BY hash_part FOR SHARE`, [notNarinfos])).rows.map(r => r.storePath))
  return { narinfos, upstream }
}

/** How a narinfo held here compares with `row`. */
function compareHeld (held: Held, row: DumpedNarinfo): LoadNarinfoOutcome {
  return held.storePath === row.storePath && held.narHash === row.narHash
    ? { kind: 'present' }
    : { kind: 'differs', storePath: held.storePath, narHash: held.narHash ?? '' }
}

/**
 * Each row's outcome, in order, as inserting them one by one would give it: present or differing
 * when its hash part is held, missing references when one is neither held nor created earlier in
 * the batch, busy when its NAR file row is here but not live; 'created' is the plan for the rest.
 */
function plan (rows: ReadyNarinfo[], held: { narinfos: Map<string, Held>, upstream: Set<string> }, notLive: Set<string>): LoadNarinfoOutcome[] {
  const createdHere = new Set<string>()
  return rows.map((row): LoadNarinfoOutcome => {
    const existing = held.narinfos.get(row.hashPart)
    if (existing !== undefined) return compareHeld(existing, row)
    const missing = row.references
      .filter(r => r.hashPart !== row.hashPart)
      .filter(r => {
        const storePath = STORE_DIR + r.baseName
        return held.narinfos.get(r.hashPart)?.storePath !== storePath && !createdHere.has(storePath) && !held.upstream.has(storePath)
      })
    if (missing.length > 0) return { kind: 'missing-references', baseNames: missing.map(r => r.baseName) }
    if (notLive.has(row.narFile.fileHash)) return { kind: 'nar-file-busy' }
    createdHere.add(row.storePath)
    return { kind: 'created' }
  })
}

/**
 * One batch of narinfos in one transaction, a handful of statements for the whole batch (not
 * several per narinfo): the guards of an insert (references held, NAR file live) are checked
 * against rows read and locked in two statements, then NAR file rows, narinfos, references and
 * provenance each go in with one INSERT … SELECT FROM unnest(…).
 */
async function loadNarinfos (tx: Tx, rows: ReadyNarinfo[], tokenIds: Map<number, number>): Promise<LoadNarinfoOutcome[]> {
  const hashParts = [...new Set(rows.flatMap(row => [row.hashPart, ...row.references.map(r => r.hashPart)]))]
  const held = await heldPaths(tx, hashParts)
  const fileHashes = [...new Set(rows.map(row => row.narFile.fileHash))]
  const notLive = new Set((await tx.query<{ fileHash: string }>(
    'SELECT file_hash AS "fileHash" FROM nar_files WHERE file_hash = ANY($1) AND state <> \'live\' ORDER BY id FOR SHARE',
    [fileHashes])).rows.map(r => r.fileHash))
  const { outcomes, fileIds } = await placeNarFiles(tx, rows, held, notLive)
  const creating = rows.filter((_row, i) => outcomes[i]?.kind === 'created')
  if (creating.length === 0) return outcomes
  const inserted = await insertNarinfos(tx, creating, fileIds)
  const children: Array<{ id: number, row: ReadyNarinfo }> = []
  for (const [i, row] of rows.entries()) {
    if (outcomes[i]?.kind !== 'created') continue
    const id = inserted.get(row.hashPart)
    if (id !== undefined) { children.push({ id, row }); continue }
    // A replica's upload of the same path committed since the check above: it stands.
    const existing = (await tx.query<Held>('SELECT store_path AS "storePath", nar_hash AS "narHash" FROM narinfos WHERE hash_part = $1', [row.hashPart])).rows[0]
    outcomes[i] = existing === undefined ? { kind: 'present' } : compareHeld(existing, row)
  }
  await insertReferencesAndProvenance(tx, children, tokenIds)
  return outcomes
}

/**
 * The NAR file rows of the narinfos planned for creation, inserted live, and their ids. One an
 * upload claimed since the plan was made (not live) turns its narinfo busy, and the plan is made again.
 */
async function placeNarFiles (tx: Tx, rows: ReadyNarinfo[], held: Awaited<ReturnType<typeof heldPaths>>, notLive: Set<string>):
Promise<{ outcomes: LoadNarinfoOutcome[], fileIds: Map<string, number> }> {
  for (;;) {
    const outcomes = plan(rows, held, notLive)
    const planned = new Map<string, DumpedNarFile>()
    rows.forEach((row, i) => { if (outcomes[i]?.kind === 'created') planned.set(row.narFile.fileHash, row.narFile) })
    if (planned.size === 0) return { outcomes, fileIds: new Map() }
    const f = [...planned.values()]
    await tx.query(
      `INSERT INTO nar_files (file_hash, file_size, compression, nar_hash, nar_size, created_at, last_accessed_at, state)
       SELECT *, 'live' FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::bigint[], $6::bigint[], $7::bigint[])
       ORDER BY 1 ON CONFLICT (file_hash) DO NOTHING`,
      [f.map(x => x.fileHash), f.map(x => x.fileSize), f.map(x => x.compression), f.map(x => x.narHash), f.map(x => x.narSize),
        f.map(x => x.createdAt), f.map(x => x.lastAccessedAt)])
    const files = (await tx.query<{ fileHash: string, id: number, state: string }>(
      'SELECT file_hash AS "fileHash", id, state FROM nar_files WHERE file_hash = ANY($1) ORDER BY id FOR SHARE', [[...planned.keys()]])).rows
    const busy = files.filter(r => r.state !== 'live')
    if (busy.length === 0) return { outcomes, fileIds: new Map(files.map(r => [r.fileHash, r.id])) }
    for (const r of busy) notLive.add(r.fileHash)
  }
}

/** Inserts the narinfos; their ids by hash part (one a concurrent upload took is not among them). */
async function insertNarinfos (tx: Tx, creating: ReadyNarinfo[], fileIds: Map<string, number>): Promise<Map<string, number>> {
  const c = creating
  return new Map((await tx.query<{ id: number, hashPart: string }>(
    `INSERT INTO narinfos (hash_part, store_path, nar_file_id, nar_hash, nar_size, deriver, ca, sigs, narinfo, created_at, last_accessed_at)
     SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::bigint[], $6::text[], $7::text[], $8::text[], $9::text[],
       $10::bigint[], $11::bigint[])
     ON CONFLICT (hash_part) DO NOTHING RETURNING id, hash_part AS "hashPart"`,
    [c.map(r => r.hashPart), c.map(r => r.storePath), c.map(r => fileIds.get(r.narFile.fileHash)), c.map(r => r.narHash), c.map(r => r.narSize),
      c.map(r => r.deriver), c.map(r => r.ca), c.map(r => r.sigs.join('\n')), c.map(r => r.narinfo), c.map(r => r.createdAt),
      c.map(r => r.lastAccessedAt)])).rows.map(r => [r.hashPart, r.id]))
}

async function insertReferencesAndProvenance (tx: Tx, inserted: Array<{ id: number, row: ReadyNarinfo }>, tokenIds: Map<number, number>): Promise<void> {
  const refs = inserted.flatMap(({ id, row }) => row.references.map(r => ({ ...r, narinfoId: id })))
  if (refs.length > 0) {
    await tx.query(
      `INSERT INTO narinfo_refs (narinfo_id, ref_hash_part, ref_base_name)
       SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[]) ON CONFLICT DO NOTHING`,
      [refs.map(r => r.narinfoId), refs.map(r => r.hashPart), refs.map(r => r.baseName)])
  }
  const p = inserted.flatMap(({ id, row }) => row.provenance.map(x => ({ ...x, narinfoId: id })))
  if (p.length > 0) {
    await tx.query(
      `INSERT INTO provenance (narinfo_id, accepted_at, outcome, token_id, token_name, key_names, client_address, upstream)
       SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::bigint[], $5::text[], $6::text[], $7::text[], $8::text[])`,
      [p.map(x => x.narinfoId), p.map(x => x.acceptedAt), p.map(x => x.outcome), p.map(x => mapToken(tokenIds, x.tokenId)), p.map(x => x.tokenName),
        p.map(x => x.keyNames.join('\n')), p.map(x => x.clientAddress), p.map(x => x.upstream)])
  }
}

/** Tokens by their hash, with the same ids where free; the source's ids mapped to the target's. */
async function loadTokens (tx: Tx, rows: DumpedToken[]): Promise<{ ids: Map<number, number>, counts: LoadCounts }> {
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
}

/** Audit entries after the move's high-water mark, in the source's order; the mark advanced in the same transaction. */
async function loadAudit (tx: Tx, moveId: number, rows: AuditRow[], tokenIds: Map<number, number>): Promise<LoadCounts> {
  const move = await moveFor(tx, moveId)
  const a = rows.filter(r => r.id > move.auditThrough)
  if (a.length > 0) {
    // In the source's order (WITH ORDINALITY), so the entries' new ids keep it.
    await tx.query(
      `INSERT INTO audit_log (at, token_id, token_name, client_address, method, subject, hash_part, file_hash, outcome, status, code, reason)
       SELECT at, token_id, token_name, client_address, method, subject, hash_part, file_hash, outcome, status, code, reason
       FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[],
         $10::int[], $11::text[], $12::text[]) WITH ORDINALITY
         AS r(at, token_id, token_name, client_address, method, subject, hash_part, file_hash, outcome, status, code, reason, n)
       ORDER BY n`,
      [a.map(r => r.at), a.map(r => mapToken(tokenIds, r.tokenId)), a.map(r => r.tokenName), a.map(r => r.clientAddress),
        a.map(r => r.method), a.map(r => r.subject), a.map(r => r.hashPart), a.map(r => r.fileHash), a.map(r => r.outcome),
        a.map(r => r.status), a.map(r => r.code), a.map(r => r.reason)])
    await tx.query('UPDATE cache_moves SET audit_through = $2 WHERE id = $1', [moveId, a.reduce((m, r) => Math.max(m, r.id), move.auditThrough)])
  }
  return { created: a.length, present: rows.length - a.length }
}

/** gc runs after the move's high-water mark, likewise. */
async function loadGcRuns (tx: Tx, moveId: number, rows: DumpedGcRun[]): Promise<LoadCounts> {
  const move = await moveFor(tx, moveId)
  const g = rows.filter(r => r.id > move.gcRunsThrough)
  if (g.length > 0) {
    await tx.query(
      `INSERT INTO gc_runs (started_at, finished_at, trigger, store_paths, nar_files, bytes, remaining_bytes)
       SELECT started_at, finished_at, trigger, store_paths, nar_files, bytes, remaining_bytes
       FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[], $7::bigint[]) WITH ORDINALITY
         AS r(started_at, finished_at, trigger, store_paths, nar_files, bytes, remaining_bytes, n)
       ORDER BY n`,
      [g.map(r => r.startedAt), g.map(r => r.finishedAt), g.map(r => r.trigger), g.map(r => r.storePaths), g.map(r => r.narFiles),
        g.map(r => r.bytes), g.map(r => r.remainingBytes)])
    await tx.query('UPDATE cache_moves SET gc_runs_through = $2 WHERE id = $1', [moveId, g.reduce((m, r) => Math.max(m, r.id), move.gcRunsThrough)])
  }
  return { created: g.length, present: rows.length - g.length }
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

    tokens: async (rows) => await pool.transaction(async (tx) => await loadTokens(tx, rows)),

    upstreamRecords: async (rows) => await pool.transaction(async (tx) => inBatch(rows.length, (await tx.query(
      `INSERT INTO upstream_narinfos (hash_part, store_path, upstream, nar_url, file_hash, file_size, compression, nar_hash,
         nar_size, refs, narinfo, created_at, refused_at)
       SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::text[], $8::text[],
         $9::bigint[], $10::text[], $11::text[], $12::bigint[], $13::bigint[])
       ON CONFLICT (hash_part) DO NOTHING`,
      [rows.map(r => r.hashPart), rows.map(r => r.storePath), rows.map(r => r.upstream), rows.map(r => r.narUrl), rows.map(r => r.fileHash),
        rows.map(r => r.fileSize), rows.map(r => r.compression), rows.map(r => r.narHash), rows.map(r => r.narSize),
        rows.map(r => r.references.join(' ')), rows.map(r => r.narinfo), rows.map(r => r.createdAt), rows.map(r => r.refusedAt)])).rowCount)),

    narinfos: async (rows, tokenIds) => await pool.transaction(async (tx) => await loadNarinfos(tx, rows, tokenIds)),

    pins: async (rows: PinRow[]) => await pool.transaction(async (tx) => inBatch(rows.length, (await tx.query(
      `INSERT INTO pins (hash_part, store_path, keep_until, created_at, note)
       SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::text[]) ON CONFLICT (hash_part) DO NOTHING`,
      [rows.map(p => p.hashPart), rows.map(p => p.storePath), rows.map(p => p.keepUntil), rows.map(p => p.createdAt), rows.map(p => p.note)])).rowCount)),

    auxFiles: async (rows: DumpedAuxFile[]) => await pool.transaction(async (tx) => inBatch(rows.length, (await tx.query(
      `INSERT INTO aux_files (kind, name, content_type, content_encoding, body, created_at)
       SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bytea[], $6::bigint[]) ON CONFLICT (kind, name) DO NOTHING`,
      [rows.map(a => a.kind), rows.map(a => a.name), rows.map(a => a.contentType), rows.map(a => a.contentEncoding), rows.map(a => a.body),
        rows.map(a => a.createdAt)])).rowCount)),

    audit: async (moveId, rows: AuditRow[], tokenIds) => await pool.transaction(async (tx) => await loadAudit(tx, moveId, rows, tokenIds)),

    gcRuns: async (moveId, rows: DumpedGcRun[]) => await pool.transaction(async (tx) => await loadGcRuns(tx, moveId, rows))
  }
}
