/**
 * BrowseStore on SQLite: the reads behind the pages for people (src/cache/browse.ts): headline
 * figures, search, and what a path page shows beyond the narinfo (referrers, pin). Read-only.
 */
import type { Db } from '../database.js'
import type { BrowseStore, PathHit, PathSummary, PinState } from '../metadata-store.js'

/** LIKE patterns are built from client text: its wildcards are matched literally. */
function likeLiteral (text: string): string {
  return text.replace(/[\\%_]/g, c => '\\' + c)
}

export class SqliteBrowse implements BrowseStore {
  private readonly stmts

  constructor (db: Db) {
    this.stmts = {
      totals: db.prepare<[], { paths: number }>('SELECT count(*) AS paths FROM narinfos'),
      narBytes: db.prepare<[], { files: number, bytes: number }>(
        'SELECT count(*) AS files, coalesce(sum(file_size), 0) AS bytes FROM nar_files'),
      // A NAR file's last_accessed_at moves on downloads only (at one-minute resolution); it starts
      // at the upload, so a file never fetched since is not counted.
      fetchedSince: db.prepare<[number], { n: number }>(
        'SELECT count(*) AS n FROM nar_files WHERE last_accessed_at >= ? AND last_accessed_at > created_at'),
      byHashPrefix: db.prepare<[string, number], PathHit>(
        `SELECT hash_part AS hashPart, store_path AS storePath, nar_size AS narSize FROM narinfos
         WHERE hash_part >= ? ORDER BY hash_part LIMIT ?`),
      byName: db.prepare<[string, number], PathHit>(
        `SELECT hash_part AS hashPart, store_path AS storePath, nar_size AS narSize FROM narinfos
         WHERE substr(store_path, 45) LIKE ? ESCAPE '\\' ORDER BY substr(store_path, 45), hash_part LIMIT ?`),
      summary: db.prepare<[string], PathSummary>(
        `SELECT n.hash_part AS hashPart, n.store_path AS storePath, n.narinfo, n.nar_size AS narSize, n.created_at AS createdAt,
                f.file_hash AS fileHash, f.file_size AS fileSize, f.compression
         FROM narinfos n JOIN nar_files f ON f.id = n.nar_file_id WHERE n.hash_part = ?`),
      referrers: db.prepare<[string, number], { hashPart: string, storePath: string }>(
        `SELECT n.hash_part AS hashPart, n.store_path AS storePath FROM narinfo_refs r JOIN narinfos n ON n.id = r.narinfo_id
         WHERE r.ref_hash_part = ? AND n.hash_part != r.ref_hash_part ORDER BY n.store_path LIMIT ?`),
      refHashes: db.prepare<[string], { baseName: string, present: number }>(
        `SELECT r.ref_base_name AS baseName,
                EXISTS (SELECT 1 FROM narinfos m WHERE m.hash_part = r.ref_hash_part) AS present
         FROM narinfo_refs r JOIN narinfos n ON n.id = r.narinfo_id WHERE n.hash_part = ? ORDER BY r.ref_base_name`),
      pin: db.prepare<[string], PinState>('SELECT keep_until AS keepUntil, note FROM pins WHERE hash_part = ?')
    }
  }

  async totals (): Promise<{ paths: number, narFiles: number, narBytes: number }> {
    const files = this.stmts.narBytes.get() ?? { files: 0, bytes: 0 }
    return { paths: this.stmts.totals.get()?.paths ?? 0, narFiles: files.files, narBytes: files.bytes }
  }

  async narFilesFetchedSince (since: number): Promise<number> {
    return this.stmts.fetchedSince.get(since)?.n ?? 0
  }

  /** Paths whose hash part starts with `prefix` (nix32 characters only; the caller checks). */
  async byHashPrefix (prefix: string, limit: number): Promise<PathHit[]> {
    return this.stmts.byHashPrefix.all(prefix, limit).filter(hit => hit.hashPart.startsWith(prefix))
  }

  /** Paths whose name (after `<hash>-`) contains `text`, case-insensitively for ASCII. */
  async byName (text: string, limit: number): Promise<PathHit[]> {
    return this.stmts.byName.all(`%${likeLiteral(text)}%`, limit)
  }

  async summary (hashPart: string): Promise<PathSummary | undefined> {
    return this.stmts.summary.get(hashPart)
  }

  /** Paths that list `hashPart` among their references (itself left out). */
  async referrers (hashPart: string, limit: number): Promise<Array<{ hashPart: string, storePath: string }>> {
    return this.stmts.referrers.all(hashPart, limit)
  }

  /** The references of a path, and whether each is in the cache (gc keeps closures whole). */
  async references (hashPart: string): Promise<Array<{ baseName: string, present: boolean }>> {
    return this.stmts.refHashes.all(hashPart).map(r => ({ baseName: r.baseName, present: r.present === 1 }))
  }

  async pin (hashPart: string): Promise<PinState | undefined> {
    return this.stmts.pin.get(hashPart)
  }
}
