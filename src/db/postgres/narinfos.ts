/**
 * Narinfos in PostgreSQL: what GET serves (remembered per change-listener generation), the
 * conditional insert and signature merge, and removal with referrers.
 *
 * Row locks keep closures whole under READ COMMITTED, as SQLite's one writer does:
 * - an insert locks FOR SHARE the NAR file it names and the narinfos it references, then checks
 *   them, and holds the locks until it commits;
 * - a removal locks FOR UPDATE every narinfo it will remove, recomputes the set of referrers in a
 *   new statement (which sees every insert that held a lock before), and locks again until the
 *   set stops growing. Nobody can add a referrer to a locked narinfo, so what it removes is whole.
 * Text sorts as SQLite's does (bytes: COLLATE "C"), whatever the database's collation.
 */
import { BodyCache } from '../../nix/body-cache.js'
import type {
  ClosureRow, InsertNarinfoOptions, InsertNarinfoOutcome, NarFileRow, NarinfoRecord, NarinfoStore, ProvenanceEntry, RemoveOutcome, RemoveRequest, StoredNarinfo
} from '../metadata-store.js'
import type { ChangeListener } from './change-listener.js'
import { markDeletingIfUnnamed } from './nar-files.js'
import type { PgPool, Tx } from './pool.js'

/** Narinfos kept in memory for GET, as the SQLite store keeps: about 10,000 of a typical 1.5 KB. */
const NARINFO_CACHE_BYTES = 16 * 1024 * 1024
const STORE_DIR = '/nix/store/'

const REFS_OF = `coalesce((SELECT array_agg(r.ref_base_name ORDER BY r.ref_base_name COLLATE "C") FROM narinfo_refs r
  WHERE r.narinfo_id = n.id), '{}') AS "references"`
const NARINFO_COLUMNS = `n.id, n.hash_part AS "hashPart", n.store_path AS "storePath", n.nar_file_id AS "narFileId",
  n.nar_hash AS "narHash", n.nar_size AS "narSize"`

/** The given hash parts and every narinfo referencing one of them, transitively ($1: text[]). */
const REFERRERS = `WITH RECURSIVE doomed(hash_part) AS (
  SELECT unnest($1::text[])
  UNION
  SELECT n.hash_part FROM narinfo_refs r JOIN doomed d ON r.ref_hash_part = d.hash_part JOIN narinfos n ON n.id = r.narinfo_id)`

type SqlNarinfo = Omit<StoredNarinfo, 'sigs'> & { sigs: string }

function splitSigs (sigs: string): string[] {
  return sigs === '' ? [] : sigs.split('\n')
}

async function storedNarinfo (tx: Pick<Tx, 'query'>, hashPart: string): Promise<StoredNarinfo | undefined> {
  const row = (await tx.query<SqlNarinfo>(
    `SELECT ${NARINFO_COLUMNS}, n.sigs, n.narinfo, ${REFS_OF} FROM narinfos n WHERE n.hash_part = $1`, [hashPart])).rows[0]
  return row === undefined ? undefined : { ...row, sigs: splitSigs(row.sigs) }
}

async function insertProvenance (tx: Tx, narinfoId: number, outcome: 'created' | 'merged', p: ProvenanceEntry): Promise<void> {
  await tx.query(
    `INSERT INTO provenance (narinfo_id, accepted_at, outcome, token_id, token_name, key_names, client_address, upstream)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
    [narinfoId, p.acceptedAt, outcome, p.tokenId, p.tokenName, p.keyNames.join('\n'), p.clientAddress, p.upstream])
}

/** The references (other than itself) that neither a narinfo nor, when allowed, a served upstream record holds; locks those found. */
async function missingReferences (tx: Tx, record: NarinfoRecord, upstreamReferences: boolean): Promise<string[]> {
  const refs = record.references.filter(r => r.hashPart !== record.hashPart)
  if (refs.length === 0) return []
  const held = new Set((await tx.query<{ storePath: string }>(
    'SELECT store_path AS "storePath" FROM narinfos WHERE hash_part = ANY($1) ORDER BY id FOR SHARE',
    [refs.map(r => r.hashPart)])).rows.map(r => r.storePath))
  let missing = refs.filter(r => !held.has(STORE_DIR + r.baseName))
  if (missing.length > 0 && upstreamReferences) {
    const upstream = new Set((await tx.query<{ storePath: string }>(
      `SELECT store_path AS "storePath" FROM upstream_narinfos WHERE hash_part = ANY($1) AND refused_at IS NULL
       ORDER BY hash_part FOR SHARE`, [missing.map(r => r.hashPart)])).rows.map(r => r.storePath))
    missing = missing.filter(r => !upstream.has(STORE_DIR + r.baseName))
  }
  return missing.map(r => r.baseName)
}

/** Locks FOR UPDATE the narinfos removing `seeds` takes along until the set stops growing; returns their ids. */
async function lockReferrerClosure (tx: Tx, seeds: string[]): Promise<void> {
  const locked = new Set<number>()
  for (;;) {
    const doomed = await tx.query<{ id: number }>(`${REFERRERS} SELECT n.id FROM doomed d JOIN narinfos n ON n.hash_part = d.hash_part`, [seeds])
    const fresh = doomed.rows.map(r => r.id).filter(id => !locked.has(id))
    if (fresh.length === 0) return
    await tx.query('SELECT id FROM narinfos WHERE id = ANY($1) ORDER BY id FOR UPDATE', [fresh])
    for (const id of fresh) locked.add(id)
  }
}

/** What removing `hashParts` takes with it as it stands now, with last use and pin (for stillWanted). */
async function closureRows (tx: Tx, hashParts: string[], now: number): Promise<ClosureRow[]> {
  return (await tx.query<ClosureRow>(
    `${REFERRERS}
     SELECT n.id, n.hash_part AS "hashPart", greatest(n.last_accessed_at, f.last_accessed_at) AS "lastUse",
            (EXISTS (SELECT 1 FROM pins p WHERE p.hash_part = n.hash_part AND (p.keep_until IS NULL OR p.keep_until > $2)))::int AS pinned
     FROM doomed d JOIN narinfos n ON n.hash_part = d.hash_part JOIN nar_files f ON f.id = n.nar_file_id ORDER BY n.id`,
    [hashParts, now])).rows
}

/** Carries a dry run's outcome out of the transaction it rolls back. */
class DryRun {
  constructor (readonly outcome: RemoveOutcome) {}
}

async function remove (tx: Tx, request: RemoveRequest, dryRun: boolean): Promise<RemoveOutcome> {
  const now = request.now ?? Date.now()
  const narFileIds = request.narFileIds ?? []
  const namers = narFileIds.length === 0
    ? []
    : (await tx.query<{ hashPart: string }>('SELECT hash_part AS "hashPart" FROM narinfos WHERE nar_file_id = ANY($1)', [narFileIds])).rows.map(r => r.hashPart)
  await lockReferrerClosure(tx, [...request.hashParts, ...namers])

  const go: string[] = []
  const kept: string[] = []
  for (const hashPart of request.hashParts) {
    // A path no longer here takes nothing along: nothing for the guard to judge.
    const closure = request.stillWanted === undefined ? [] : await closureRows(tx, [hashPart], now)
    const wanted = closure.length === 0 || request.stillWanted === undefined || request.stillWanted(hashPart, closure)
    if (wanted) go.push(hashPart)
    else kept.push(hashPart)
  }

  const removed = (await tx.query<{ storePath: string, narFileId: number }>(
    `${REFERRERS} DELETE FROM narinfos n USING doomed d WHERE n.hash_part = d.hash_part
     RETURNING n.store_path AS "storePath", n.nar_file_id AS "narFileId", n.hash_part AS "hashPart"`,
    [[...go, ...namers]])).rows as Array<{ storePath: string, narFileId: number, hashPart: string }>
  removed.sort((a, b) => a.hashPart < b.hashPart ? -1 : a.hashPart > b.hashPart ? 1 : 0)

  // Files left unnamed by this removal (live), and the files asked for (fsck: damaged) in any state.
  const fileIds = [...new Set([...removed.map(r => r.narFileId), ...narFileIds])]
  const narFiles: NarFileRow[] = await markDeletingIfUnnamed(tx, fileIds, "f.state = 'live' OR f.id = ANY($2)", [narFileIds])
  const outcome = { storePaths: removed.map(r => r.storePath), kept, narFiles }
  if (dryRun) throw new DryRun(outcome)
  return outcome
}

/** The insert's guards and writes, in one transaction (see NarinfoStore.insert). */
async function insertNarinfo (tx: Tx, record: NarinfoRecord, provenance: ProvenanceEntry, options: InsertNarinfoOptions): Promise<InsertNarinfoOutcome> {
  const existing = await storedNarinfo(tx, record.hashPart)
  if (existing !== undefined) return { kind: 'exists', existing }
  const file = await tx.query<{ state: string }>('SELECT state FROM nar_files WHERE id = $1 FOR SHARE', [record.narFileId])
  if (file.rows[0]?.state !== 'live') return { kind: 'nar-file-not-live' }
  const missing = await missingReferences(tx, record, options.upstreamReferences)
  if (missing.length > 0) return { kind: 'missing-references', baseNames: missing }
  const inserted = await tx.query<{ id: number }>(
    `INSERT INTO narinfos (hash_part, store_path, nar_file_id, nar_hash, nar_size, deriver, ca, sigs, narinfo, created_at, last_accessed_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10) ON CONFLICT (hash_part) DO NOTHING RETURNING id`,
    [record.hashPart, record.storePath, record.narFileId, record.narHash, record.narSize, record.deriver, record.ca,
      record.sigs.join('\n'), record.narinfo, options.now])
  const id = inserted.rows[0]?.id
  if (id === undefined) {
    // Another upload of the same path committed since this one looked.
    const now = await storedNarinfo(tx, record.hashPart)
    if (now === undefined) throw new Error(`narinfo ${record.hashPart}: neither inserted nor present`)
    return { kind: 'exists', existing: now }
  }
  if (record.references.length > 0) {
    await tx.query(
      `INSERT INTO narinfo_refs (narinfo_id, ref_hash_part, ref_base_name)
       SELECT $1, h, b FROM unnest($2::text[], $3::text[]) AS t(h, b) ON CONFLICT DO NOTHING`,
      [id, record.references.map(r => r.hashPart), record.references.map(r => r.baseName)])
  }
  await insertProvenance(tx, id, 'created', provenance)
  return { kind: 'created' }
}

/** The compare-and-swap of NarinfoStore.mergeSignatures, with its provenance; false when the signatures changed meanwhile. */
async function swapSignatures (tx: Tx, id: number, expectedSigs: string[], sigs: string[], narinfo: string, provenance: ProvenanceEntry): Promise<boolean> {
  const updated = await tx.query('UPDATE narinfos SET sigs = $1, narinfo = $2 WHERE id = $3 AND sigs = $4',
    [sigs.join('\n'), narinfo, id, expectedSigs.join('\n')])
  if (updated.rowCount !== 1) return false
  await insertProvenance(tx, id, 'merged', provenance)
  return true
}

export function pgNarinfoStore (pool: PgPool, listener: ChangeListener): NarinfoStore {
  const bodies = new BodyCache(NARINFO_CACHE_BYTES)

  return {
    body: async (hashPart) => {
      const generation = listener.current()
      bodies.keepFor(generation)
      const known = bodies.get(hashPart)
      if (known !== undefined) return known ?? undefined
      const text = (await pool.query<{ narinfo: string }>('SELECT narinfo FROM narinfos WHERE hash_part = $1', [hashPart])).rows[0]?.narinfo
      const body = text === undefined ? null : Buffer.from(text, 'utf8')
      // Kept only when no change was heard while it was read: a notification overtaken by an older read would otherwise be lost.
      if (listener.stillAt(generation)) bodies.set(hashPart, body)
      return body ?? undefined
    },

    peekBody: (hashPart) => {
      bodies.keepFor(listener.current())
      return bodies.get(hashPart)
    },

    get: async (hashPart) => await storedNarinfo(pool, hashPart),

    text: async (hashPart) => (await pool.query<{ narinfo: string }>('SELECT narinfo FROM narinfos WHERE hash_part = $1', [hashPart])).rows[0]?.narinfo,

    has: async (hashPart) => (await pool.query('SELECT 1 FROM narinfos WHERE hash_part = $1', [hashPart])).rows.length > 0,

    storePathOf: async (hashPart) => (await pool.query<{ storePath: string }>(
      'SELECT store_path AS "storePath" FROM narinfos WHERE hash_part = $1', [hashPart])).rows[0]?.storePath,

    count: async () => (await pool.query<{ n: number }>('SELECT count(*) AS n FROM narinfos')).rows[0]?.n ?? 0,

    insert: async (record, provenance, options): Promise<InsertNarinfoOutcome> => {
      const outcome = await pool.transaction(async (tx) => await insertNarinfo(tx, record, provenance, options),
        { durableWithNext: options.durableWithNext === true })
      if (outcome.kind === 'created') listener.changed()
      return outcome
    },

    mergeSignatures: async (id, expectedSigs, sigs, narinfo, provenance) => {
      const merged = await pool.transaction(async (tx) => await swapSignatures(tx, id, expectedSigs, sigs, narinfo, provenance))
      if (!merged) return { kind: 'changed-meanwhile' }
      listener.changed()
      return { kind: 'merged' }
    },

    remove: async (request, options = {}) => {
      const dryRun = options.dryRun ?? false
      try {
        const outcome = await pool.transaction(async (tx) => await remove(tx, request, dryRun))
        listener.changed()
        return outcome
      } catch (err) {
        if (err instanceof DryRun) return err.outcome
        throw err
      }
    },

    page: async (afterId, limit) => (await pool.query<Omit<StoredNarinfo, 'sigs'>>(
      `SELECT ${NARINFO_COLUMNS}, n.narinfo, ${REFS_OF} FROM narinfos n WHERE n.id > $1 ORDER BY n.id LIMIT $2`, [afterId, limit])).rows,

    withoutLiveNarFile: async () => (await pool.query<{ hashPart: string, storePath: string, narFileId: number }>(
      `SELECT n.hash_part AS "hashPart", n.store_path AS "storePath", n.nar_file_id AS "narFileId" FROM narinfos n
       WHERE NOT EXISTS (SELECT 1 FROM nar_files f WHERE f.id = n.nar_file_id AND f.state = 'live') ORDER BY n.id`)).rows,

    missingReferences: async () => (await pool.query<{ hashPart: string, storePath: string, refBaseName: string }>(
      `SELECT n.hash_part AS "hashPart", n.store_path AS "storePath", r.ref_base_name AS "refBaseName"
       FROM narinfo_refs r JOIN narinfos n ON n.id = r.narinfo_id
       WHERE NOT EXISTS (SELECT 1 FROM narinfos m WHERE m.hash_part = r.ref_hash_part AND m.store_path = $1 || r.ref_base_name)
       ORDER BY n.id, r.ref_base_name COLLATE "C"`, [STORE_DIR])).rows,

    naming: async (narFileIds) => (await pool.query<{ hashPart: string, storePath: string }>(
      `SELECT hash_part AS "hashPart", store_path AS "storePath" FROM narinfos WHERE nar_file_id = ANY($1)
       ORDER BY hash_part COLLATE "C"`, [narFileIds])).rows
  }
}
