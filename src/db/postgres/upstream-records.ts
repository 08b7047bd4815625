/** Narinfos pulled from upstream caches (migrations/0004_upstreams.sql), in PostgreSQL. */
import type { UpstreamRecord, UpstreamRecordStore } from '../metadata-store.js'
import type { ChangeListener } from './change-listener.js'
import type { PgPool } from './pool.js'
import { Remembered } from './remembered.js'

const COLUMNS = `hash_part AS "hashPart", store_path AS "storePath", upstream, nar_url AS "narUrl", file_hash AS "fileHash",
  file_size AS "fileSize", compression, nar_hash AS "narHash", nar_size AS "narSize", refs, narinfo,
  created_at AS "createdAt", refused_at AS "refusedAt"`
/** Records remembered for peek (about 2 KB each). */
const REMEMBERED_RECORDS = 5000

type Row = Omit<UpstreamRecord, 'references'> & { refs: string }

function fromRow (row: Row): UpstreamRecord {
  const { refs, ...rest } = row
  return { ...rest, references: refs === '' ? [] : refs.split(' ') }
}

export function pgUpstreamRecordStore (pool: PgPool, listener: ChangeListener): UpstreamRecordStore {
  const remembered = new Remembered<UpstreamRecord | null>(REMEMBERED_RECORDS)
  return {
    get: async (hashPart) => {
      const generation = listener.current()
      const row = (await pool.query<Row>(`SELECT ${COLUMNS} FROM upstream_narinfos WHERE hash_part = $1`, [hashPart])).rows[0]
      const record = row === undefined ? undefined : fromRow(row)
      if (listener.stillAt(generation)) remembered.set(hashPart, record ?? null, generation)
      return record
    },
    peek: (hashPart) => remembered.get(hashPart, listener.current()),
    namingFile: async (fileHash) => (await pool.query<Row>(
      `SELECT ${COLUMNS} FROM upstream_narinfos WHERE file_hash = $1 AND refused_at IS NULL ORDER BY hash_part COLLATE "C"`, [fileHash]))
      .rows.map(fromRow),
    holds: async (hashPart, storePath) => (await pool.query(
      'SELECT 1 FROM upstream_narinfos WHERE hash_part = $1 AND store_path = $2 AND refused_at IS NULL', [hashPart, storePath])).rows.length > 0,
    // The first record stored for a path stays (it may already have been served).
    insert: async (record) => {
      await pool.transaction(async (tx) => await tx.query(
        `INSERT INTO upstream_narinfos (hash_part, store_path, upstream, nar_url, file_hash, file_size, compression, nar_hash, nar_size,
           refs, narinfo, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT (hash_part) DO NOTHING`,
        [record.hashPart, record.storePath, record.upstream, record.narUrl, record.fileHash, record.fileSize, record.compression,
          record.narHash, record.narSize, record.references.join(' '), record.narinfo, record.createdAt]), { durableWithNext: true })
      listener.changed()
    },
    refuseFile: async (fileHash, now) => {
      const result = await pool.query('UPDATE upstream_narinfos SET refused_at = $1 WHERE file_hash = $2 AND refused_at IS NULL', [now, fileHash])
      listener.changed()
      return result.rowCount ?? 0
    }
  }
}
