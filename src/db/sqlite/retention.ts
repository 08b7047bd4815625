/**
 * RetentionStore on SQLite: last-use times, pins, the snapshot a collection plans from, and the
 * record of collections. Removal itself is NarinfoStore.remove (store.ts), shared with fsck.
 *
 * A path's own last use is the later of its narinfo's and its NAR file's last_accessed_at: a NAR
 * download is use of every path whose narinfo names that file. Both start at the upload time.
 */
import type { Db } from '../database.js'
import type { GcEdgeRow, GcPathRow, GcRunRow, GcSnapshot, PinRow, RetentionStore } from '../metadata-store.js'

/**
 * A read within this long of the recorded last use is not written again. Eviction works in
 * hours and days; skipping the row rewrite keeps the flush of a busy server's hot paths down to
 * index lookups.
 */
export const TOUCH_RESOLUTION_MS = 60_000

export class SqliteRetention implements RetentionStore {
  private readonly db: Db
  private readonly stmts

  constructor (db: Db) {
    this.db = db
    this.stmts = {
      touchNarinfo: db.prepare(
        'UPDATE narinfos SET last_accessed_at = @now WHERE hash_part = @key AND last_accessed_at < @before'),
      touchNarFile: db.prepare(
        'UPDATE nar_files SET last_accessed_at = @now WHERE file_hash = @key AND last_accessed_at < @before'),
      gcPaths: db.prepare<[number], GcPathRow>(
        `SELECT n.id, n.hash_part AS hashPart, n.nar_file_id AS narFileId,
                max(n.last_accessed_at, f.last_accessed_at) AS lastUse,
                EXISTS (SELECT 1 FROM pins p WHERE p.hash_part = n.hash_part AND (p.keep_until IS NULL OR p.keep_until > ?)) AS pinned,
                (SELECT u.upstream FROM upstream_narinfos u
                 WHERE u.hash_part = n.hash_part AND u.file_hash = f.file_hash AND u.refused_at IS NULL) AS upstream
         FROM narinfos n JOIN nar_files f ON f.id = n.nar_file_id`),
      gcEdges: db.prepare<[], GcEdgeRow>(
        `SELECT r.narinfo_id AS referrer, n.id AS reference
         FROM narinfo_refs r JOIN narinfos n ON n.hash_part = r.ref_hash_part
         WHERE n.id != r.narinfo_id`),
      lastUse: db.prepare<[string], { narinfo: number, narFile: number }>(
        `SELECT n.last_accessed_at AS narinfo, f.last_accessed_at AS narFile
         FROM narinfos n JOIN nar_files f ON f.id = n.nar_file_id WHERE n.hash_part = ?`),
      setNarinfoLastUse: db.prepare('UPDATE narinfos SET last_accessed_at = @at WHERE hash_part = @key'),
      setNarFileLastUse: db.prepare('UPDATE nar_files SET last_accessed_at = @at WHERE file_hash = @key'),
      narFileSizes: db.prepare<[], { id: number, fileSize: number }>("SELECT id, file_size AS fileSize FROM nar_files WHERE state = 'live'"),
      storePathsOf: db.prepare<[string], { id: number, storePath: string }>(
        'SELECT n.id, n.store_path AS storePath FROM json_each(?) j JOIN narinfos n ON n.id = j.value'),
      totalNarBytes: db.prepare<[], { bytes: number | null }>("SELECT sum(file_size) AS bytes FROM nar_files WHERE state = 'live'"),
      upsertPin: db.prepare(
        `INSERT INTO pins (hash_part, store_path, keep_until, created_at, note)
         VALUES (@hashPart, @storePath, @keepUntil, @now, @note)
         ON CONFLICT (hash_part) DO UPDATE SET store_path = excluded.store_path, keep_until = excluded.keep_until,
           note = excluded.note`),
      deletePin: db.prepare('DELETE FROM pins WHERE hash_part = ?'),
      listPins: db.prepare<[], PinRow>(
        `SELECT hash_part AS hashPart, store_path AS storePath, keep_until AS keepUntil, created_at AS createdAt, note
         FROM pins ORDER BY store_path`),
      deleteExpiredPins: db.prepare('DELETE FROM pins WHERE keep_until IS NOT NULL AND keep_until <= ?'),
      insertGcRun: db.prepare(
        `INSERT INTO gc_runs (started_at, finished_at, trigger, store_paths, nar_files, bytes, remaining_bytes)
         VALUES (@startedAt, @finishedAt, @trigger, @storePaths, @narFiles, @bytes, @remainingBytes)`),
      lastGcRun: db.prepare<[], GcRunRow>(
        `SELECT started_at AS startedAt, finished_at AS finishedAt, trigger, store_paths AS storePaths,
                nar_files AS narFiles, bytes, remaining_bytes AS remainingBytes
         FROM gc_runs ORDER BY id DESC LIMIT 1`),
      gcTotals: db.prepare<[], { runs: number, storePaths: number | null, narFiles: number | null, bytes: number | null }>(
        'SELECT count(*) AS runs, sum(store_paths) AS storePaths, sum(nar_files) AS narFiles, sum(bytes) AS bytes FROM gc_runs')
    }
  }

  /**
   * Records reads noted since the last call, in one write transaction. A time never moves back,
   * so several server processes may flush the same keys in any order.
   */
  async touch (narinfoHashParts: Iterable<string>, narFileHashes: Iterable<string>, now: number): Promise<void> {
    const before = now - TOUCH_RESOLUTION_MS
    this.db.transaction(() => {
      for (const key of narinfoHashParts) this.stmts.touchNarinfo.run({ key, now, before })
      for (const key of narFileHashes) this.stmts.touchNarFile.run({ key, now, before })
    }).immediate()
  }

  async lastUse (hashPart: string): Promise<{ narinfo: number, narFile: number } | undefined> {
    return this.stmts.lastUse.get(hashPart)
  }

  async setLastUse (narinfoHashParts: Iterable<string>, narFileHashes: Iterable<string>, at: number): Promise<void> {
    this.db.transaction(() => {
      for (const key of narinfoHashParts) this.stmts.setNarinfoLastUse.run({ key, at })
      for (const key of narFileHashes) this.stmts.setNarFileLastUse.run({ key, at })
    }).immediate()
  }

  /** Every narinfo, reference and NAR file size, read in one transaction so they agree. */
  async snapshot (now: number): Promise<GcSnapshot> {
    return this.db.transaction(() => ({
      paths: this.stmts.gcPaths.all(now),
      edges: this.stmts.gcEdges.all(),
      narFiles: this.stmts.narFileSizes.all()
    }))()
  }

  /** Store paths of narinfo ids (those that exist). */
  async storePathsOf (ids: number[]): Promise<Map<number, string>> {
    return new Map(this.stmts.storePathsOf.all(JSON.stringify(ids)).map(r => [r.id, r.storePath]))
  }

  /** The size of every NAR file the cache holds, named or not. */
  async totalNarBytes (): Promise<number> {
    return this.stmts.totalNarBytes.get()?.bytes ?? 0
  }

  /** Adds a pin, or replaces the expiry and note of an existing one. */
  async addPin (pin: { hashPart: string, storePath: string, keepUntil: number | null, note: string | null }, now: number): Promise<void> {
    this.stmts.upsertPin.run({ ...pin, now })
  }

  /** False when no pin names that path. */
  async removePin (hashPart: string): Promise<boolean> {
    return this.stmts.deletePin.run(hashPart).changes > 0
  }

  async listPins (): Promise<PinRow[]> {
    return this.stmts.listPins.all()
  }

  /** Deletes pins whose keep-until has passed; returns how many. */
  async deleteExpiredPins (now: number): Promise<number> {
    return this.stmts.deleteExpiredPins.run(now).changes
  }

  async recordGcRun (run: GcRunRow): Promise<void> {
    this.stmts.insertGcRun.run(run)
  }

  async lastGcRun (): Promise<GcRunRow | undefined> {
    return this.stmts.lastGcRun.get()
  }

  /** Sums over every recorded collection, for /metrics. */
  async gcTotals (): Promise<{ runs: number, storePaths: number, narFiles: number, bytes: number }> {
    const row = this.stmts.gcTotals.get()
    return { runs: row?.runs ?? 0, storePaths: row?.storePaths ?? 0, narFiles: row?.narFiles ?? 0, bytes: row?.bytes ?? 0 }
  }
}
