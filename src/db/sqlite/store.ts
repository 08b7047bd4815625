/**
 * The MetadataStore (db/metadata-store.ts) on the embedded SQLite file: narinfos, NAR files, aux
 * files and tokens here; retention, provenance and audit, the pages' reads and upstream records in
 * the files beside this one. All of narwhal's SQL lives in src/db, as prepared statements behind
 * named methods, so the schema (migrations/) and its uses can be read side by side.
 *
 * better-sqlite3 is synchronous: every method does its whole work (in one transaction where it
 * writes more than one row) before its promise is made, so no two methods interleave in a process
 * and the write lock (BEGIN IMMEDIATE) orders them across processes.
 *
 * Sizes are SQLite integers (64-bit, so NARs over 4 GiB fit; returned as numbers, exact up to
 * 2^53 bytes).
 */
import fs, { closeSync, openSync } from 'node:fs'
import path from 'node:path'
import { promisify } from 'node:util'
import { migrate, openDatabase, type Db } from '../database.js'
import type {
  AuxFile, AuxFileEntry, AuxFileStore, ClaimOutcome, InsertNarinfoOutcome, MetadataDump, MetadataStore, NarFileFacts, NarFileRow,
  NarFileStore, NarinfoRecord, NarinfoStore, ProvenanceEntry, RemoveOutcome, RemoveRequest, StoredNarinfo, TokenRow,
  TokenStore
} from '../metadata-store.js'
import { BodyCache } from '../../nix/body-cache.js'
import { GroupSync } from '../../nix/group-sync.js'
import { STORE_DIR } from '../../nix/store-path.js'
import { REFERRERS_CTE } from './referrers-sql.js'
import { SqliteAudit, SqliteProvenance } from './provenance.js'
import { SqliteRetention } from './retention.js'
import { SqliteBrowse } from './browse.js'
import { SqliteUpstreamRecords } from './upstream-records.js'
import { sqliteDump } from './dump.js'

/**
 * Narinfos kept in memory for GET (narinfos.body): about 10,000 of a typical 1.5 KB. Each process
 * of `narwhal serve --workers N` keeps its own.
 */
const NARINFO_CACHE_BYTES = 16 * 1024 * 1024

/**
 * How long a reading of PRAGMA data_version is trusted (servedGeneration): what another process
 * commits is seen by this one's memories at most this much later. Asking SQLite takes a read
 * transaction's locks; asked before every answer it was the largest cost of a narinfo hit after
 * the socket write (BENCHMARKS.md). A millisecond is less than a request takes to cross a
 * network; this connection's own writes are seen at once.
 */
export const CROSS_PROCESS_FRESHNESS_MS = 1

const fsync = promisify(fs.fsync)

const NAR_FILE_COLUMNS = `id, file_hash AS fileHash, file_size AS fileSize, compression, nar_hash AS narHash,
  nar_size AS narSize, state`

/** NAR files: what an upload claims and makes live, what gc and fsck remove. */
function narFileStatements (db: Db) {
  return {
    narFileByHash: db.prepare<[string], NarFileRow>(`SELECT ${NAR_FILE_COLUMNS} FROM nar_files WHERE file_hash = ?`),
    narFileById: db.prepare<[number], NarFileRow>(`SELECT ${NAR_FILE_COLUMNS} FROM nar_files WHERE id = ?`),
    // created_at is what gc's grace for unnamed NAR files counts from, so a claim of a NAR already
    // recorded moves it to now: a client that re-sends a NAR sends its narinfo next, and a
    // collection in between must not take it. max(): a clock stepping back never makes a row look
    // older. The rest of the row stays: the same file hash means the same bytes. A row being
    // deleted is left alone (no RETURNING row: the claimer waits and tries again).
    claimNarFile: db.prepare<[NarFileFacts & { now: number }], NarFileRow>(
      `INSERT INTO nar_files (file_hash, file_size, compression, nar_hash, nar_size, created_at, last_accessed_at, state)
       VALUES (@fileHash, @fileSize, @compression, @narHash, @narSize, @now, @now, 'pending')
       ON CONFLICT (file_hash) DO UPDATE SET created_at = max(created_at, excluded.created_at) WHERE state <> 'deleting'
       RETURNING ${NAR_FILE_COLUMNS}`),
    // A pending or live row is live afterwards (RETURNING a row); a deleting or missing one is not.
    markLive: db.prepare<[number], { id: number }>("UPDATE nar_files SET state = 'live' WHERE id = ? AND state <> 'deleting' RETURNING id"),
    renewNarFile: db.prepare<[{ fileHash: string, now: number }], NarFileRow>(
      `UPDATE nar_files SET created_at = max(created_at, @now) WHERE file_hash = @fileHash AND state = 'live'
       RETURNING ${NAR_FILE_COLUMNS}`),
    narFileIsNamed: db.prepare<[number], { one: number }>('SELECT 1 AS one FROM narinfos WHERE nar_file_id = ? LIMIT 1'),
    collectableNarFiles: db.prepare<[{ createdBefore: number, pendingBefore: number }], NarFileRow>(
      `SELECT ${NAR_FILE_COLUMNS} FROM nar_files f
       WHERE (f.state = 'live' AND f.created_at < @createdBefore
              AND NOT EXISTS (SELECT 1 FROM narinfos n WHERE n.nar_file_id = f.id))
          OR (f.state = 'pending' AND f.created_at < @pendingBefore)
          OR f.state = 'deleting'
       ORDER BY f.id`),
    markDeleting: db.prepare<[number]>("UPDATE nar_files SET state = 'deleting' WHERE id = ?"),
    forgetNarFile: db.prepare<[number, number]>(
      "DELETE FROM nar_files WHERE id = ? AND state = 'deleting' AND NOT EXISTS (SELECT 1 FROM narinfos WHERE nar_file_id = ?)"),
    narFilesPage: db.prepare<[number, number], NarFileRow>(
      `SELECT ${NAR_FILE_COLUMNS} FROM nar_files WHERE id > ? ORDER BY id LIMIT ?`),
    narFileTotals: db.prepare<[], { files: number, bytes: number }>(
      'SELECT count(*) AS files, coalesce(sum(file_size), 0) AS bytes FROM nar_files')
  }
}

type NarinfoSqlRow = Omit<StoredNarinfo, 'sigs' | 'references'> & { sigs: string }

/** Narinfos and their references: what GET serves, what acceptNarinfo and removals write. */
function narinfoStatements (db: Db) {
  return {
    narinfoText: db.prepare<[string], { narinfo: string }>('SELECT narinfo FROM narinfos WHERE hash_part = ?'),
    narinfoByHash: db.prepare<[string], NarinfoSqlRow>(
      `SELECT id, hash_part AS hashPart, store_path AS storePath, nar_file_id AS narFileId,
              nar_hash AS narHash, nar_size AS narSize, sigs, narinfo FROM narinfos WHERE hash_part = ?`),
    sigsById: db.prepare<[number], { sigs: string }>('SELECT sigs FROM narinfos WHERE id = ?'),
    refsOf: db.prepare<[number], { baseName: string }>(
      'SELECT ref_base_name AS baseName FROM narinfo_refs WHERE narinfo_id = ? ORDER BY ref_base_name'),
    hasNarinfo: db.prepare<[string], { one: number }>('SELECT 1 AS one FROM narinfos WHERE hash_part = ?'),
    storePathOf: db.prepare<[string], { storePath: string }>('SELECT store_path AS storePath FROM narinfos WHERE hash_part = ?'),
    upstreamHolds: db.prepare<[string, string], { one: number }>(
      'SELECT 1 AS one FROM upstream_narinfos WHERE hash_part = ? AND store_path = ? AND refused_at IS NULL'),
    insertNarinfo: db.prepare(
      `INSERT INTO narinfos (hash_part, store_path, nar_file_id, nar_hash, nar_size, deriver, ca, sigs, narinfo,
                             created_at, last_accessed_at)
       VALUES (@hashPart, @storePath, @narFileId, @narHash, @narSize, @deriver, @ca, @sigs, @narinfo, @now, @now)`),
    insertRef: db.prepare('INSERT OR IGNORE INTO narinfo_refs (narinfo_id, ref_hash_part, ref_base_name) VALUES (?, ?, ?)'),
    updateSigs: db.prepare('UPDATE narinfos SET sigs = @sigs, narinfo = @narinfo WHERE id = @id'),
    insertProvenance: db.prepare(
      `INSERT INTO provenance (narinfo_id, accepted_at, outcome, token_id, token_name, key_names, client_address, upstream)
       VALUES (@narinfoId, @acceptedAt, @outcome, @tokenId, @tokenName, @keyNames, @clientAddress, @upstream)`),
    narinfoCount: db.prepare<[], { n: number }>('SELECT count(*) AS n FROM narinfos'),
    // The given hash parts plus every narinfo that references one of them, transitively: the
    // set that must go together so no served narinfo is left with a missing reference.
    withReferrers: db.prepare<[string], { hashPart: string, storePath: string, narFileId: number }>(
      `${REFERRERS_CTE}
       SELECT n.hash_part AS hashPart, n.store_path AS storePath, n.nar_file_id AS narFileId
       FROM doomed d JOIN narinfos n ON n.hash_part = d.hash_part ORDER BY n.hash_part`),
    // The same with what gc's guard judges: last use and pin as they are now.
    referrerClosure: db.prepare<[string, number], { id: number, hashPart: string, lastUse: number, pinned: number }>(
      `${REFERRERS_CTE}
       SELECT n.id, n.hash_part AS hashPart, max(n.last_accessed_at, f.last_accessed_at) AS lastUse,
              EXISTS (SELECT 1 FROM pins p WHERE p.hash_part = n.hash_part AND (p.keep_until IS NULL OR p.keep_until > ?)) AS pinned
       FROM doomed d JOIN narinfos n ON n.hash_part = d.hash_part JOIN nar_files f ON f.id = n.nar_file_id`),
    deleteNarinfo: db.prepare('DELETE FROM narinfos WHERE hash_part = ?'),
    narinfosNaming: db.prepare<[string], { hashPart: string, storePath: string }>(
      `SELECT hash_part AS hashPart, store_path AS storePath FROM narinfos
       WHERE nar_file_id IN (SELECT value FROM json_each(?)) ORDER BY hash_part`),
    narinfosPage: db.prepare<[number, number], Omit<StoredNarinfo, 'sigs' | 'references'>>(
      `SELECT id, hash_part AS hashPart, store_path AS storePath, nar_file_id AS narFileId,
              nar_hash AS narHash, nar_size AS narSize, narinfo FROM narinfos WHERE id > ? ORDER BY id LIMIT ?`),
    narinfosWithoutLiveNarFile: db.prepare<[], { hashPart: string, storePath: string, narFileId: number }>(
      `SELECT n.hash_part AS hashPart, n.store_path AS storePath, n.nar_file_id AS narFileId FROM narinfos n
       WHERE NOT EXISTS (SELECT 1 FROM nar_files f WHERE f.id = n.nar_file_id AND f.state = 'live') ORDER BY n.id`),
    // A reference counts as present only when a narinfo holds exactly that store path, as
    // acceptNarinfo required when the referrer was written.
    missingReferences: db.prepare<[], { hashPart: string, storePath: string, refBaseName: string }>(
      `SELECT n.hash_part AS hashPart, n.store_path AS storePath, r.ref_base_name AS refBaseName
       FROM narinfo_refs r JOIN narinfos n ON n.id = r.narinfo_id
       WHERE NOT EXISTS (SELECT 1 FROM narinfos m WHERE m.hash_part = r.ref_hash_part
                                                   AND m.store_path = '${STORE_DIR}/' || r.ref_base_name)
       ORDER BY n.id, r.ref_base_name`)
  }
}

/** Aux files (logs, listings, realisations, debuginfo) and tokens. */
function auxFileAndTokenStatements (db: Db) {
  return {
    auxGet: db.prepare<[string, string], AuxFile>(
      `SELECT content_type AS contentType, content_encoding AS contentEncoding, body
       FROM aux_files WHERE kind = ? AND name = ?`),
    auxPut: db.prepare(
      `INSERT INTO aux_files (kind, name, content_type, content_encoding, body, created_at)
       VALUES (@kind, @name, @contentType, @contentEncoding, @body, @now)
       ON CONFLICT (kind, name) DO UPDATE SET content_type = excluded.content_type,
         content_encoding = excluded.content_encoding, body = excluded.body`),
    auxFilesPage: db.prepare<[number, number], AuxFileEntry>(
      `SELECT rowid AS id, kind, name, content_type AS contentType, content_encoding AS contentEncoding,
              length(body) AS size FROM aux_files WHERE rowid > ? ORDER BY rowid LIMIT ?`),
    insertToken: db.prepare(
      `INSERT INTO tokens (name, scope, token_hash, created_at, expires_at)
       VALUES (@name, @scope, @tokenHash, @now, @expiresAt)`),
    tokenByHash: db.prepare<[string], TokenRow>(
      `SELECT id, name, scope, created_at AS createdAt, expires_at AS expiresAt, revoked_at AS revokedAt
       FROM tokens WHERE token_hash = ?`),
    listTokens: db.prepare<[], TokenRow>(
      `SELECT id, name, scope, created_at AS createdAt, expires_at AS expiresAt, revoked_at AS revokedAt
       FROM tokens ORDER BY id`),
    revokeToken: db.prepare('UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL')
  }
}

/** Thrown inside a transaction to roll a dry run back while carrying its result out. */
class DryRunRollback {
  constructor (readonly outcome: RemoveOutcome) {}
}

export class SqliteMetadataStore implements MetadataStore {
  readonly narFiles: NarFileStore
  readonly narinfos: NarinfoStore
  readonly aux: AuxFileStore
  readonly tokens: TokenStore
  readonly retention: SqliteRetention
  readonly provenance: SqliteProvenance
  readonly audit: SqliteAudit
  readonly browse: SqliteBrowse
  readonly upstreamRecords: SqliteUpstreamRecords
  readonly dump: MetadataDump

  private readonly db: Db
  private readonly stmts
  /** One transaction function for every write: better-sqlite3 builds a new one per db.transaction() call. */
  private readonly inTransaction: (fn: () => unknown) => unknown
  private readonly narinfoCache = new BodyCache(NARINFO_CACHE_BYTES)
  /**
   * The write-ahead log's file, synced for the commits that wait for the disk (see durably);
   * undefined for a database not in WAL mode (in memory), whose commits wait as SQLite does.
   */
  private readonly logFile: string | undefined
  private logDescriptor: number | undefined
  /** Commits by durably so far, and how many of them a finished sync has put on the disk. */
  private durablyCommitted = 0
  private durablySynced = 0

  private readonly logSyncs: GroupSync

  /** See servedGeneration. */
  private generation = 0
  private seenDataVersion = -1
  private dataVersionReadAt = -Infinity
  private readonly clock: () => number

  /**
   * `clock` is milliseconds on a monotonic scale; `syncLog(file)` makes what was written to the
   * write-ahead log durable, an fsync by default (tests pass their own of both).
   */
  constructor (db: Db, clock: () => number = () => performance.now(), syncLog?: (file: string) => Promise<void>) {
    this.db = db
    this.clock = clock
    this.inTransaction = db.transaction((fn: () => unknown) => fn()).immediate
    this.logSyncs = new GroupSync(syncLog ?? (async (file) => {
      this.logDescriptor ??= openSync(file, 'r')
      await fsync(this.logDescriptor)
    }))
    this.logFile = !db.memory && String(db.pragma('journal_mode', { simple: true })) === 'wal' ? path.resolve(db.name) + '-wal' : undefined
    this.stmts = {
      // Changes whenever another connection (another process, a gc worker thread) commits;
      // never for this connection's own writes.
      dataVersion: db.prepare<[], number>('PRAGMA data_version').pluck(),
      syncNormal: db.prepare('PRAGMA synchronous = NORMAL'),
      syncFull: db.prepare('PRAGMA synchronous = FULL'),
      ...narFileStatements(db),
      ...narinfoStatements(db),
      ...auxFileAndTokenStatements(db)
    }
    this.retention = new SqliteRetention(db)
    this.provenance = new SqliteProvenance(db)
    this.audit = new SqliteAudit(db)
    this.browse = new SqliteBrowse(db)
    this.upstreamRecords = new SqliteUpstreamRecords(db)
    this.dump = sqliteDump(db)
    this.narFiles = this.narFileFacet()
    this.narinfos = this.narinfoFacet()
    this.aux = this.auxFacet()
    this.tokens = this.tokenFacet()
  }

  /** The database connection, for tests that inspect SQLite itself. */
  get database (): Db {
    return this.db
  }

  async close (): Promise<void> {
    if (this.logFile !== undefined && this.logDescriptor !== undefined) {
      // Never close the descriptor under a sync still running on it.
      await this.logSyncs.sync(this.logFile).catch(() => {})
      closeSync(this.logDescriptor)
      this.logDescriptor = undefined
    }
    this.db.close()
  }

  /** Runs fn in one write transaction (BEGIN IMMEDIATE), so checks and writes cannot interleave. */
  private transaction<T> (fn: () => T): T {
    return this.inTransaction(fn) as T
  }

  /**
   * The same, but its commit does not wait for the disk (`synchronous = NORMAL` for this one
   * transaction): it becomes durable with the next commit that does, of any connection, because
   * WAL frames reach the disk in the order they were written. After a power cut it may be lost,
   * but only together with every later one. For writes of no use until a later commit builds on
   * them (a NAR file's row, which only its narinfo makes useful).
   */
  private durableWithNext<T> (fn: () => T): T {
    this.stmts.syncNormal.run()
    try {
      return this.transaction(fn)
    } finally {
      this.stmts.syncFull.run()
    }
  }

  /**
   * fn in one write transaction whose commit is on the disk when the promise resolves, by group
   * commit: committed without waiting for the disk (durableWithNext), then the log synced on the
   * thread pool, one sync shared by every commit made meanwhile (nix/group-sync.ts). The event loop
   * goes on during the sync, and concurrent uploads share it. The rows are read at once by others;
   * a power cut before the sync loses them together with every later commit, and their writer
   * has not been answered yet. `wrote` says whether the result changed anything (no sync if not).
   */
  private async durably<T> (fn: () => T, wrote: (result: T) => boolean): Promise<T> {
    if (this.logFile === undefined) return this.transaction(fn)
    const result = this.durableWithNext(fn)
    if (wrote(result)) {
      const commit = ++this.durablyCommitted
      await this.logSyncs.sync(this.logFile)
      this.durablySynced = Math.max(this.durablySynced, commit)
    }
    return result
  }

  /**
   * A narinfo committed with durableWithNext is not on the disk until a later sync: counted, so
   * that reading it waits for one (settled) like one committed by durably.
   */
  private countedUnsynced<T> (result: T, wrote: (result: T) => boolean): T {
    if (wrote(result)) this.durablyCommitted++
    return result
  }

  /** Waits until every narinfo committed is on the disk; at once when none waits for it. */
  private async settled (): Promise<void> {
    if (this.durablySynced >= this.durablyCommitted) return
    await this.flush()
  }

  async flush (): Promise<void> {
    if (this.logFile === undefined) return
    const upTo = this.durablyCommitted
    await this.logSyncs.sync(this.logFile)
    this.durablySynced = Math.max(this.durablySynced, upTo)
  }

  /**
   * A number that changes whenever what GET serves may have changed: this connection wrote
   * narinfos or NAR file states (at once), or another connection committed (PRAGMA data_version,
   * read again once CROSS_PROCESS_FRESHNESS_MS have passed since the last reading).
   */
  servedGeneration (): number {
    const now = this.clock()
    if (now - this.dataVersionReadAt >= CROSS_PROCESS_FRESHNESS_MS) {
      this.dataVersionReadAt = now
      const version = this.stmts.dataVersion.get() ?? -1
      if (version !== this.seenDataVersion) {
        this.seenDataVersion = version
        this.generation++
      }
    }
    return this.generation
  }

  /** The narinfo as served, from memory when asked since the last change; null when absent. */
  private narinfoBody (hashPart: string): Buffer | null {
    this.narinfoCache.keepFor(this.servedGeneration())
    const known = this.narinfoCache.get(hashPart)
    if (known !== undefined) return known
    const text = this.stmts.narinfoText.get(hashPart)?.narinfo
    const body = text === undefined ? null : Buffer.from(text, 'utf8')
    // Inside a transaction the row may yet be rolled back: read, but not remembered.
    if (!this.db.inTransaction) this.narinfoCache.set(hashPart, body)
    return body
  }

  private storedNarinfo (hashPart: string): StoredNarinfo | undefined {
    const row = this.stmts.narinfoByHash.get(hashPart)
    if (row === undefined) return undefined
    return {
      ...row,
      sigs: row.sigs === '' ? [] : row.sigs.split('\n'),
      references: this.stmts.refsOf.all(row.id).map(r => r.baseName)
    }
  }

  private narFileFacet (): NarFileStore {
    const s = this.stmts
    return {
      get: async (fileHash) => s.narFileByHash.get(fileHash),
      getById: async (id) => s.narFileById.get(id),
      peekLive: (fileHash) => {
        const row = s.narFileByHash.get(fileHash)
        return row?.state === 'live' ? row : null
      },
      claim: async (facts, now): Promise<ClaimOutcome> => this.durableWithNext(() => {
        const { fileHash, fileSize, compression, narHash, narSize } = facts
        const row = s.claimNarFile.get({ fileHash, fileSize, compression, narHash, narSize, now })
        if (row === undefined) return { kind: 'deleting' }
        return row.state === 'live' ? { kind: 'live', row } : { kind: 'pending', row }
      }),
      // Nothing served from memory changes: only live files are ever kept there.
      markLive: async (id) => this.durableWithNext(() => s.markLive.get(id) !== undefined),
      renew: async (fileHash, now) => s.renewNarFile.get({ fileHash, now }),
      markUnnamedDeleting: async (createdBefore, pendingBefore, options = {}) => {
        const deleting = (row: NarFileRow): NarFileRow => ({ ...row, state: 'deleting' })
        if (options.dryRun === true) return s.collectableNarFiles.all({ createdBefore, pendingBefore }).map(deleting)
        // Waits for the disk: the blobs are deleted next, and a row must never say 'live' for one gone.
        return this.transaction(() => {
          const rows = s.collectableNarFiles.all({ createdBefore, pendingBefore })
          for (const row of rows) {
            if (row.state !== 'deleting') s.markDeleting.run(row.id)
          }
          this.generation++
          return rows.map(deleting)
        })
      },
      // Losing this to a power cut leaves a 'deleting' row, which the next collection finishes.
      forget: async (id) => this.durableWithNext(() => {
        this.generation++
        return s.forgetNarFile.run(id, id).changes > 0
      }),
      page: async (afterId, limit) => s.narFilesPage.all(afterId, limit),
      totals: async () => s.narFileTotals.get() ?? { files: 0, bytes: 0 }
    }
  }

  private narinfoFacet (): NarinfoStore {
    const s = this.stmts
    return {
      body: async (hashPart) => this.narinfoBody(hashPart) ?? undefined,
      peekBody: (hashPart) => this.narinfoBody(hashPart),
      get: async (hashPart) => {
        const found = this.storedNarinfo(hashPart)
        // A narinfo committed but not on the disk yet must not decide an answer (an identical
        // upload told 'unchanged' while a power cut could still take the first one's row).
        if (found !== undefined) await this.settled()
        return found
      },
      text: async (hashPart) => s.narinfoText.get(hashPart)?.narinfo,
      has: async (hashPart) => s.hasNarinfo.get(hashPart) !== undefined,
      storePathOf: async (hashPart) => s.storePathOf.get(hashPart)?.storePath,
      count: async () => s.narinfoCount.get()?.n ?? 0,
      insert: async (record, provenance, options) => options.durableWithNext === true
        ? this.countedUnsynced(this.durableWithNext(() => this.insertNarinfo(record, provenance, options)), outcome => outcome.kind === 'created')
        : await this.durably(() => this.insertNarinfo(record, provenance, options), outcome => outcome.kind === 'created'),
      mergeSignatures: async (id, expectedSigs, sigs, narinfo, provenance) => await this.durably(() => {
        if (s.sigsById.get(id)?.sigs !== expectedSigs.join('\n')) return { kind: 'changed-meanwhile' as const }
        s.updateSigs.run({ id, sigs: sigs.join('\n'), narinfo })
        this.insertProvenance(id, 'merged', provenance)
        this.generation++
        return { kind: 'merged' as const }
      }, outcome => outcome.kind === 'merged'),
      remove: async (request, options = {}) => this.removeNarinfos(request, options.dryRun ?? false),
      page: async (afterId, limit) => s.narinfosPage.all(afterId, limit).map(row => ({
        ...row,
        references: s.refsOf.all(row.id).map(r => r.baseName)
      })),
      withoutLiveNarFile: async () => s.narinfosWithoutLiveNarFile.all(),
      missingReferences: async () => s.missingReferences.all(),
      naming: async (narFileIds) => s.narinfosNaming.all(JSON.stringify(narFileIds))
    }
  }

  /** The guards of NarinfoStore.insert; call inside a write transaction. */
  private insertNarinfo (record: NarinfoRecord, provenance: ProvenanceEntry,
    options: { upstreamReferences: boolean, now: number }): InsertNarinfoOutcome {
    const s = this.stmts
    const existing = this.storedNarinfo(record.hashPart)
    if (existing !== undefined) return { kind: 'exists', existing }
    if (s.narFileById.get(record.narFileId)?.state !== 'live') return { kind: 'nar-file-not-live' }
    const ownBaseName = record.storePath.slice(STORE_DIR.length + 1)
    const missing = record.references.filter(({ hashPart, baseName }) => {
      if (baseName === ownBaseName) return false
      const storePath = `${STORE_DIR}/${baseName}`
      if (s.storePathOf.get(hashPart)?.storePath === storePath) return false
      return !(options.upstreamReferences && s.upstreamHolds.get(hashPart, storePath) !== undefined)
    })
    if (missing.length > 0) return { kind: 'missing-references', baseNames: missing.map(r => r.baseName) }
    const result = s.insertNarinfo.run({
      hashPart: record.hashPart,
      storePath: record.storePath,
      narFileId: record.narFileId,
      narHash: record.narHash,
      narSize: record.narSize,
      deriver: record.deriver,
      ca: record.ca,
      sigs: record.sigs.join('\n'),
      narinfo: record.narinfo,
      now: options.now
    })
    const id = Number(result.lastInsertRowid)
    for (const ref of record.references) s.insertRef.run(id, ref.hashPart, ref.baseName)
    this.insertProvenance(id, 'created', provenance)
    this.generation++
    return { kind: 'created' }
  }

  private insertProvenance (narinfoId: number, outcome: 'created' | 'merged', p: ProvenanceEntry): void {
    this.stmts.insertProvenance.run({
      narinfoId,
      outcome,
      acceptedAt: p.acceptedAt,
      tokenId: p.tokenId,
      tokenName: p.tokenName,
      keyNames: p.keyNames.join('\n'),
      clientAddress: p.clientAddress,
      upstream: p.upstream
    })
  }

  /** NarinfoStore.remove: one write transaction, rolled back for a dry run. */
  private removeNarinfos (request: RemoveRequest, dryRun: boolean): RemoveOutcome {
    const s = this.stmts
    const work = (): RemoveOutcome => {
      const now = request.now ?? Date.now()
      const kept: string[] = []
      let go = request.hashParts
      const guard = request.stillWanted
      if (guard !== undefined) {
        go = go.filter(hashPart => {
          const closure = s.referrerClosure.all(JSON.stringify([hashPart]), now)
          if (closure.length === 0 || guard(hashPart, closure)) return true
          kept.push(hashPart)
          return false
        })
      }
      const narFileIds = request.narFileIds ?? []
      if (narFileIds.length > 0) go = [...go, ...s.narinfosNaming.all(JSON.stringify(narFileIds)).map(n => n.hashPart)]
      const doomed = s.withReferrers.all(JSON.stringify(go))
      for (const n of doomed) s.deleteNarinfo.run(n.hashPart)
      const narFiles: NarFileRow[] = []
      for (const id of new Set([...narFileIds, ...doomed.map(n => n.narFileId)])) {
        const row = s.narFileById.get(id)
        if (row === undefined || s.narFileIsNamed.get(id) !== undefined) continue
        s.markDeleting.run(id)
        narFiles.push({ ...row, state: 'deleting' })
      }
      this.generation++
      const outcome = { storePaths: doomed.map(n => n.storePath), kept, narFiles }
      if (dryRun) throw new DryRunRollback(outcome)
      return outcome
    }
    try {
      return this.transaction(work)
    } catch (err) {
      if (err instanceof DryRunRollback) return err.outcome
      throw err
    }
  }

  private auxFacet (): AuxFileStore {
    const s = this.stmts
    return {
      get: async (kind, name) => s.auxGet.get(kind, name),
      put: async (kind, name, file, now) => { s.auxPut.run({ kind, name, ...file, now }) },
      page: async (afterId, limit) => s.auxFilesPage.all(afterId, limit)
    }
  }

  private tokenFacet (): TokenStore {
    const s = this.stmts
    return {
      insert: async (t, now) => Number(s.insertToken.run({ ...t, now }).lastInsertRowid),
      byHash: async (tokenHash) => s.tokenByHash.get(tokenHash),
      list: async () => s.listTokens.all(),
      revoke: async (id, now) => s.revokeToken.run(now, id).changes > 0
    }
  }
}

/** Opens (creating and migrating) the SQLite metadata file. */
export function openSqliteMetadataStore (file: string): SqliteMetadataStore {
  const db = openDatabase(file)
  migrate(db)
  return new SqliteMetadataStore(db)
}
