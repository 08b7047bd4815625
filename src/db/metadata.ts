/**
 * All SQL narwhal runs, as prepared statements behind named methods. Nothing outside src/db
 * writes SQL, so the schema (migrations/) and its uses can be read side by side.
 *
 * Hashes are stored as nix32 strings, sizes as SQLite integers (64-bit, so NARs over 4 GiB fit;
 * better-sqlite3 returns them as numbers, exact up to 2^53 bytes).
 */
import type { AuxFileKind } from '../nix/binary-cache-files.js'
import type { Db } from './database.js'
import { BodyCache } from '../nix/body-cache.js'
import { REFERRERS_CTE } from './referrers-sql.js'

export interface NarFileRow {
  id: number
  fileHash: string
  fileSize: number
  compression: string
  narHash: string
  narSize: number
}

export interface NarinfoRecord {
  hashPart: string
  storePath: string
  narFileId: number
  narHash: string
  narSize: number
  deriver: string | null
  ca: string | null
  sigs: string[]
  narinfo: string
  references: Array<{ hashPart: string, baseName: string }>
}

export interface StoredNarinfo {
  id: number
  hashPart: string
  storePath: string
  narFileId: number
  narHash: string
  narSize: number
  sigs: string[]
  narinfo: string
  references: string[]
}

export interface AuxFile { contentType: string, contentEncoding: string | null, body: Buffer }
export type AuxKind = AuxFileKind
/** An aux file without its body: what a listing needs. */
export interface AuxFileEntry { id: number, kind: AuxKind, name: string, contentType: string, contentEncoding: string | null, size: number }

export type TokenScope = 'read' | 'push' | 'admin'
export interface TokenRow {
  id: number
  name: string
  scope: TokenScope
  createdAt: number
  expiresAt: number | null
  revokedAt: number | null
}

/**
 * Narinfos kept in memory for GET (narinfoBody): about 10,000 of a typical 1.5 KB. Each process
 * of `narwhal serve --workers N` keeps its own.
 */
const NARINFO_CACHE_BYTES = 16 * 1024 * 1024

/**
 * How long a reading of PRAGMA data_version is trusted (servedGeneration): what another process
 * commits is seen by this one's memories at most this much later. Asking SQLite takes a read
 * transaction's locks (several fcntl calls); asked before every answer it was the largest cost of
 * a narinfo hit after the socket write (BENCHMARKS.md, 2026-12-01). One millisecond is less than
 * a request takes to cross a network, so a client cannot tell it from a request that arrived
 * that much earlier; this connection's own writes are seen at once.
 */
export const CROSS_PROCESS_FRESHNESS_MS = 1

export class Metadata {
  private readonly db: Db
  private readonly stmts
  private readonly narinfoCache = new BodyCache(NARINFO_CACHE_BYTES)
  /** See servedGeneration. */
  private generation = 0
  private seenDataVersion = -1
  private dataVersionReadAt = -Infinity
  private readonly clock: () => number

  /** `clock` is milliseconds on a monotonic scale (tests pass their own). */
  constructor (db: Db, clock: () => number = () => performance.now()) {
    this.db = db
    this.clock = clock
    this.stmts = {
      // Changes whenever another connection (another process, a gc worker thread) commits;
      // never for this connection's own writes.
      dataVersion: db.prepare<[], number>('PRAGMA data_version').pluck(),
      narFileByHash: db.prepare<[string], NarFileRow>(
        `SELECT id, file_hash AS fileHash, file_size AS fileSize, compression, nar_hash AS narHash,
                nar_size AS narSize FROM nar_files WHERE file_hash = ?`),
      // created_at is what gc's grace for unnamed NAR files counts from (unnamedNarFiles below),
      // so an upload of a NAR already recorded moves it to now: a client that re-sends a NAR it
      // sent long ago (a retried `nix copy`) sends the narinfo next, and a collection in between
      // must not take the NAR. max(): a clock stepping back never makes a row look older. The
      // rest of the row stays: the same file hash means the same bytes, verified the first time.
      // RETURNING gives the row, new or existing, in the same statement.
      insertNarFile: db.prepare<[Omit<NarFileRow, 'id'> & { now: number }], NarFileRow>(
        `INSERT INTO nar_files (file_hash, file_size, compression, nar_hash, nar_size, created_at, last_accessed_at)
         VALUES (@fileHash, @fileSize, @compression, @narHash, @narSize, @now, @now)
         ON CONFLICT (file_hash) DO UPDATE SET created_at = max(created_at, excluded.created_at)
         RETURNING id, file_hash AS fileHash, file_size AS fileSize, compression, nar_hash AS narHash, nar_size AS narSize`),
      // The same for a re-upload that stores nothing (cache/store-nar.ts holdsNar).
      renewNarFile: db.prepare<[{ fileHash: string, now: number }], NarFileRow>(
        `UPDATE nar_files SET created_at = max(created_at, @now) WHERE file_hash = @fileHash
         RETURNING id, file_hash AS fileHash, file_size AS fileSize, compression, nar_hash AS narHash, nar_size AS narSize`),
      narinfoText: db.prepare<[string], { narinfo: string }>(
        'SELECT narinfo FROM narinfos WHERE hash_part = ?'),
      narinfoByHash: db.prepare<[string], Omit<StoredNarinfo, 'sigs' | 'references'> & { sigs: string }>(
        `SELECT id, hash_part AS hashPart, store_path AS storePath, nar_file_id AS narFileId,
                nar_hash AS narHash, nar_size AS narSize, sigs, narinfo FROM narinfos WHERE hash_part = ?`),
      refsOf: db.prepare<[number], { baseName: string }>(
        'SELECT ref_base_name AS baseName FROM narinfo_refs WHERE narinfo_id = ? ORDER BY ref_base_name'),
      hasNarinfo: db.prepare<[string], { one: number }>('SELECT 1 AS one FROM narinfos WHERE hash_part = ?'),
      storePathOf: db.prepare<[string], { storePath: string }>('SELECT store_path AS storePath FROM narinfos WHERE hash_part = ?'),
      insertNarinfo: db.prepare(
        `INSERT INTO narinfos (hash_part, store_path, nar_file_id, nar_hash, nar_size, deriver, ca, sigs, narinfo,
                               created_at, last_accessed_at)
         VALUES (@hashPart, @storePath, @narFileId, @narHash, @narSize, @deriver, @ca, @sigs, @narinfo, @now, @now)`),
      insertRef: db.prepare(
        'INSERT OR IGNORE INTO narinfo_refs (narinfo_id, ref_hash_part, ref_base_name) VALUES (?, ?, ?)'),
      updateSigs: db.prepare('UPDATE narinfos SET sigs = @sigs, narinfo = @narinfo WHERE id = @id'),
      narinfoCount: db.prepare<[], { n: number }>('SELECT count(*) AS n FROM narinfos'),
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
      revokeToken: db.prepare('UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL'),
      // The given hash parts plus every narinfo that references one of them, transitively: the
      // set that must go together so no served narinfo is left with a missing reference.
      withReferrers: db.prepare<[string], { hashPart: string, storePath: string, narFileId: number }>(
        `${REFERRERS_CTE}
         SELECT n.hash_part AS hashPart, n.store_path AS storePath, n.nar_file_id AS narFileId
         FROM doomed d JOIN narinfos n ON n.hash_part = d.hash_part ORDER BY n.hash_part`),
      deleteNarinfo: db.prepare('DELETE FROM narinfos WHERE hash_part = ?'),
      narFileById: db.prepare<[number], NarFileRow>(
        `SELECT id, file_hash AS fileHash, file_size AS fileSize, compression, nar_hash AS narHash,
                nar_size AS narSize FROM nar_files WHERE id = ?`),
      narFileIsNamed: db.prepare<[number], { one: number }>('SELECT 1 AS one FROM narinfos WHERE nar_file_id = ? LIMIT 1'),
      unnamedNarFiles: db.prepare<[number], NarFileRow & { createdAt: number }>(
        `SELECT f.id, f.file_hash AS fileHash, f.file_size AS fileSize, f.compression, f.nar_hash AS narHash,
                f.nar_size AS narSize, f.created_at AS createdAt
         FROM nar_files f WHERE f.created_at < ? AND NOT EXISTS (SELECT 1 FROM narinfos n WHERE n.nar_file_id = f.id)
         ORDER BY f.id`),
      deleteNarFile: db.prepare('DELETE FROM nar_files WHERE id = ? AND NOT EXISTS (SELECT 1 FROM narinfos WHERE nar_file_id = ?)'),
      // fsck: reading everything in id order, a page at a time, and the inconsistencies SQL can see.
      narFilesPage: db.prepare<[number, number], NarFileRow>(
        `SELECT id, file_hash AS fileHash, file_size AS fileSize, compression, nar_hash AS narHash,
                nar_size AS narSize FROM nar_files WHERE id > ? ORDER BY id LIMIT ?`),
      narinfosPage: db.prepare<[number, number], Omit<StoredNarinfo, 'sigs' | 'references'>>(
        `SELECT id, hash_part AS hashPart, store_path AS storePath, nar_file_id AS narFileId,
                nar_hash AS narHash, nar_size AS narSize, narinfo FROM narinfos WHERE id > ? ORDER BY id LIMIT ?`),
      narinfosWithoutNarFile: db.prepare<[], { hashPart: string, storePath: string, narFileId: number }>(
        `SELECT n.hash_part AS hashPart, n.store_path AS storePath, n.nar_file_id AS narFileId FROM narinfos n
         WHERE NOT EXISTS (SELECT 1 FROM nar_files f WHERE f.id = n.nar_file_id) ORDER BY n.id`),
      // A reference counts as present only when a narinfo holds exactly that store path, as
      // acceptNarinfo required when the referrer was written.
      missingReferences: db.prepare<[], { hashPart: string, storePath: string, refBaseName: string }>(
        `SELECT n.hash_part AS hashPart, n.store_path AS storePath, r.ref_base_name AS refBaseName
         FROM narinfo_refs r JOIN narinfos n ON n.id = r.narinfo_id
         WHERE NOT EXISTS (SELECT 1 FROM narinfos m WHERE m.hash_part = r.ref_hash_part
                                                     AND m.store_path = '/nix/store/' || r.ref_base_name)
         ORDER BY n.id, r.ref_base_name`),
      narFileTotals: db.prepare<[], { files: number, bytes: number }>(
        'SELECT count(*) AS files, coalesce(sum(file_size), 0) AS bytes FROM nar_files'),
      narinfosNaming: db.prepare<[string], { hashPart: string, storePath: string }>(
        `SELECT hash_part AS hashPart, store_path AS storePath FROM narinfos
         WHERE nar_file_id IN (SELECT value FROM json_each(?)) ORDER BY hash_part`)
    }
  }

  /** Runs fn in one write transaction (BEGIN IMMEDIATE), so checks and inserts cannot interleave. */
  transaction<T> (fn: () => T): T {
    return this.db.transaction(fn).immediate()
  }

  /**
   * The same, but its commit does not wait for the disk (`synchronous = NORMAL` for this one
   * transaction): it becomes durable with the next commit that does, of any connection, because
   * WAL frames reach the disk in the order they were written. After a power cut the commit may be
   * lost, but only together with every later one; the database is never left inconsistent.
   * For writes of no use until a later commit builds on them (a NAR's row, which only its
   * narinfo makes useful; see cache/store-nar.ts).
   */
  transactionDurableWithNext<T> (fn: () => T): T {
    this.db.pragma('synchronous = NORMAL')
    try {
      return this.transaction(fn)
    } finally {
      this.db.pragma('synchronous = FULL')
    }
  }

  narFile (fileHash: string): NarFileRow | undefined {
    return this.stmts.narFileByHash.get(fileHash)
  }

  /**
   * Inserts the row of a verified NAR file, or returns the one already recorded for its hash
   * with its grace period restarted at `now` (see insertNarFile).
   */
  recordNarFile (row: Omit<NarFileRow, 'id'>, now = Date.now()): NarFileRow {
    const stored = this.stmts.insertNarFile.get({ ...row, now })
    if (stored === undefined) throw new Error('nar_files upsert returned no row')
    return stored
  }

  /**
   * Restarts the grace period of a recorded NAR file at `now`, as uploading it again does: its
   * row, or undefined when there is none (never uploaded, or collected).
   */
  renewNarFile (fileHash: string, now = Date.now()): NarFileRow | undefined {
    return this.stmts.renewNarFile.get({ fileHash, now })
  }

  narinfoText (hashPart: string): string | undefined {
    return this.stmts.narinfoText.get(hashPart)?.narinfo
  }

  /**
   * A number that changes whenever what GET serves may have changed: this connection wrote
   * narinfos or removed NAR file rows (at once), or another connection committed (PRAGMA
   * data_version: another worker, `narwhal gc`, a gc thread; read again once
   * CROSS_PROCESS_FRESHNESS_MS have passed since the last reading). Whoever keeps served bytes in
   * memory (narinfoBody below, small NAR bodies in server/fast-reads.ts) asks for it before each
   * answer and forgets them all when it changed: what they answer is this connection's latest
   * write, and at most a millisecond behind other processes' commits.
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

  /**
   * The narinfo as served (its UTF-8 bytes), or undefined: what GET answers, from memory when
   * this hash part was asked for since the last change (servedGeneration). A hit then costs no row
   * lookup and no UTF-8 encoding; measured in BENCHMARKS.md (2026-11-30, late evening).
   */
  narinfoBody (hashPart: string): Buffer | undefined {
    this.narinfoCache.keepFor(this.servedGeneration())
    const known = this.narinfoCache.get(hashPart)
    if (known !== undefined) return known ?? undefined
    const text = this.narinfoText(hashPart)
    const body = text === undefined ? null : Buffer.from(text, 'utf8')
    // Inside a transaction the row may yet be rolled back: read, but not remembered.
    if (!this.db.inTransaction) this.narinfoCache.set(hashPart, body)
    return body ?? undefined
  }

  narinfo (hashPart: string): StoredNarinfo | undefined {
    const row = this.stmts.narinfoByHash.get(hashPart)
    if (row === undefined) return undefined
    return {
      ...row,
      sigs: row.sigs === '' ? [] : row.sigs.split('\n'),
      references: this.stmts.refsOf.all(row.id).map(r => r.baseName)
    }
  }

  hasNarinfo (hashPart: string): boolean {
    return this.stmts.hasNarinfo.get(hashPart) !== undefined
  }

  storePathOf (hashPart: string): string | undefined {
    return this.stmts.storePathOf.get(hashPart)?.storePath
  }

  insertNarinfo (rec: NarinfoRecord, now = Date.now()): void {
    const result = this.stmts.insertNarinfo.run({
      hashPart: rec.hashPart,
      storePath: rec.storePath,
      narFileId: rec.narFileId,
      narHash: rec.narHash,
      narSize: rec.narSize,
      deriver: rec.deriver,
      ca: rec.ca,
      sigs: rec.sigs.join('\n'),
      narinfo: rec.narinfo,
      now
    })
    const id = Number(result.lastInsertRowid)
    for (const ref of rec.references) this.stmts.insertRef.run(id, ref.hashPart, ref.baseName)
    this.generation++
  }

  updateSignatures (id: number, sigs: string[], narinfo: string): void {
    this.stmts.updateSigs.run({ id, sigs: sigs.join('\n'), narinfo })
    this.generation++
  }

  narinfoCount (): number {
    return this.stmts.narinfoCount.get()?.n ?? 0
  }

  auxFile (kind: AuxKind, name: string): AuxFile | undefined {
    return this.stmts.auxGet.get(kind, name)
  }

  putAuxFile (kind: AuxKind, name: string, file: AuxFile, now = Date.now()): void {
    this.stmts.auxPut.run({ kind, name, ...file, now })
  }

  /** Up to `limit` aux files (without bodies) with ids above `afterId`, in id order: page through all of them. */
  auxFilesPage (afterId: number, limit: number): AuxFileEntry[] {
    return this.stmts.auxFilesPage.all(afterId, limit)
  }

  insertToken (t: { name: string, scope: TokenScope, tokenHash: string, expiresAt: number | null }, now = Date.now()): number {
    return Number(this.stmts.insertToken.run({ ...t, now }).lastInsertRowid)
  }

  tokenByHash (tokenHash: string): TokenRow | undefined {
    return this.stmts.tokenByHash.get(tokenHash)
  }

  listTokens (): TokenRow[] {
    return this.stmts.listTokens.all()
  }

  /** Returns false when no live token has that id. */
  revokeToken (id: number, now = Date.now()): boolean {
    return this.stmts.revokeToken.run(now, id).changes > 0
  }

  /**
   * The narinfos named by `hashParts` (those that exist) together with every narinfo whose
   * closure contains one of them. Removing fewer would leave a served narinfo with a reference
   * the cache cannot give.
   */
  withReferrers (hashParts: string[]): Array<{ hashPart: string, storePath: string, narFileId: number }> {
    return this.stmts.withReferrers.all(JSON.stringify(hashParts))
  }

  /** Deletes one narinfo (its reference rows go with it); false when there was none. */
  deleteNarinfo (hashPart: string): boolean {
    this.generation++
    return this.stmts.deleteNarinfo.run(hashPart).changes > 0
  }

  narFileById (id: number): NarFileRow | undefined {
    return this.stmts.narFileById.get(id)
  }

  /** True when some narinfo points at this NAR file. */
  narFileIsNamed (id: number): boolean {
    return this.stmts.narFileIsNamed.get(id) !== undefined
  }

  /** NAR file rows no narinfo points at, last uploaded before `createdBefore` (unix ms). */
  unnamedNarFiles (createdBefore: number): Array<NarFileRow & { createdAt: number }> {
    return this.stmts.unnamedNarFiles.all(createdBefore)
  }

  /** Deletes a NAR file row unless a narinfo points at it; true when it was deleted. */
  deleteNarFileRow (id: number): boolean {
    this.generation++
    return this.stmts.deleteNarFile.run(id, id).changes > 0
  }

  // fsck

  /** Up to `limit` NAR file rows with ids above `afterId`, in id order: page through all of them. */
  narFilesPage (afterId: number, limit: number): NarFileRow[] {
    return this.stmts.narFilesPage.all(afterId, limit)
  }

  /** How many NAR file rows there are and the sum of their sizes. */
  narFileTotals (): { files: number, bytes: number } {
    return this.stmts.narFileTotals.get() ?? { files: 0, bytes: 0 }
  }

  /** Up to `limit` narinfos with ids above `afterId`, in id order, with their references. */
  narinfosPage (afterId: number, limit: number): Array<Omit<StoredNarinfo, 'sigs'>> {
    return this.stmts.narinfosPage.all(afterId, limit).map(row => ({
      ...row,
      references: this.stmts.refsOf.all(row.id).map(r => r.baseName)
    }))
  }

  /** Narinfos whose NAR file row is gone (the foreign key forbids it; a hand edit may not). */
  narinfosWithoutNarFile (): Array<{ hashPart: string, storePath: string, narFileId: number }> {
    return this.stmts.narinfosWithoutNarFile.all()
  }

  /** Each reference, other than to a path the cache holds, with the narinfo that names it. */
  missingReferences (): Array<{ hashPart: string, storePath: string, refBaseName: string }> {
    return this.stmts.missingReferences.all()
  }

  /** The narinfos that point at any of these NAR files. */
  narinfosNaming (narFileIds: number[]): Array<{ hashPart: string, storePath: string }> {
    return this.stmts.narinfosNaming.all(JSON.stringify(narFileIds))
  }
}
