/**
 * UpstreamRecordStore on SQLite: narinfos pulled from upstream caches (migrations/0004_upstreams.sql): what an
 * upstream served and narwhal verified, kept so it is served again without asking, and so its NAR
 * can be fetched when a client asks for it.
 */
import type { Db } from '../database.js'
import type { UpstreamRecord, UpstreamRecordStore } from '../metadata-store.js'

type Row = Omit<UpstreamRecord, 'references'> & { refs: string }

const COLUMNS = `hash_part AS hashPart, store_path AS storePath, upstream, nar_url AS narUrl, file_hash AS fileHash,
  file_size AS fileSize, compression, nar_hash AS narHash, nar_size AS narSize, refs, narinfo,
  created_at AS createdAt, refused_at AS refusedAt`

function fromRow (row: Row): UpstreamRecord {
  const { refs, ...rest } = row
  return { ...rest, references: refs === '' ? [] : refs.split(' ') }
}

export class SqliteUpstreamRecords implements UpstreamRecordStore {
  private readonly db: Db
  private readonly stmts

  constructor (db: Db) {
    this.db = db
    this.stmts = {
      byHash: db.prepare<[string], Row>(`SELECT ${COLUMNS} FROM upstream_narinfos WHERE hash_part = ?`),
      byFile: db.prepare<[string], Row>(
        `SELECT ${COLUMNS} FROM upstream_narinfos WHERE file_hash = ? AND refused_at IS NULL ORDER BY hash_part`),
      holds: db.prepare<[string, string], { one: number }>(
        'SELECT 1 AS one FROM upstream_narinfos WHERE hash_part = ? AND store_path = ? AND refused_at IS NULL'),
      // A narinfo verified once stays as it was first stored: a later answer for the same path is
      // not taken (the first may already have been served, and its NAR fetched).
      insert: db.prepare(
        `INSERT INTO upstream_narinfos (hash_part, store_path, upstream, nar_url, file_hash, file_size, compression,
           nar_hash, nar_size, refs, narinfo, created_at)
         VALUES (@hashPart, @storePath, @upstream, @narUrl, @fileHash, @fileSize, @compression, @narHash, @narSize,
           @refs, @narinfo, @createdAt)
         ON CONFLICT (hash_part) DO NOTHING`),
      refuse: db.prepare('UPDATE upstream_narinfos SET refused_at = @now WHERE file_hash = @fileHash AND refused_at IS NULL')
    }
  }

  async get (hashPart: string): Promise<UpstreamRecord | undefined> {
    return this.peek(hashPart) ?? undefined
  }

  peek (hashPart: string): UpstreamRecord | null {
    const row = this.stmts.byHash.get(hashPart)
    return row === undefined ? null : fromRow(row)
  }

  /** The narinfos still served that name this NAR file. */
  async namingFile (fileHash: string): Promise<UpstreamRecord[]> {
    return this.stmts.byFile.all(fileHash).map(fromRow)
  }

  /** Whether a verified, still served narinfo from an upstream holds exactly this store path. */
  async holds (hashPart: string, storePath: string): Promise<boolean> {
    return this.stmts.holds.get(hashPart, storePath) !== undefined
  }

  /**
   * Stores a verified narinfo; the first one stored for a path stays. The commit does not wait
   * for the disk (it becomes durable with the next one that does): one lost to a power cut is
   * asked of the upstream again, while an fsync per narinfo, on the event loop, cost a cold
   * substitution most of its time.
   */
  async insert (record: Omit<UpstreamRecord, 'refusedAt'>): Promise<void> {
    const { references, ...rest } = record
    this.db.pragma('synchronous = NORMAL')
    try {
      this.stmts.insert.run({ ...rest, refs: references.join(' ') })
    } finally {
      this.db.pragma('synchronous = FULL')
    }
  }

  /** Stops serving every narinfo that names this NAR file (its bytes did not match). */
  async refuseFile (fileHash: string, now: number): Promise<number> {
    return this.stmts.refuse.run({ fileHash, now }).changes
  }
}
