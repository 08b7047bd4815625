/**
 * MetadataDump on the embedded SQLite file: every row as stored, a page at a time, for moving the
 * cache to PostgreSQL (cache/move-cache.ts). Read-only; each page is one read.
 */
import type { Db } from '../database.js'
import type {
  AuditRow, DumpedAuxFile, DumpedGcRun, DumpedNarFile, DumpedNarinfo, DumpedToken, MetadataDump, PinRow, ProvenanceRow, UpstreamRecord
} from '../metadata-store.js'

type NarinfoSqlRow = Omit<DumpedNarinfo, 'sigs' | 'narFile' | 'references' | 'provenance'> & { sigs: string, narFileId: number }
type ProvenanceSqlRow = Omit<ProvenanceRow, 'keyNames'> & { keyNames: string }
type UpstreamSqlRow = Omit<UpstreamRecord, 'references'> & { refs: string }

const lines = (text: string): string[] => text === '' ? [] : text.split('\n')

export function sqliteDump (db: Db): MetadataDump {
  const s = {
    narinfos: db.prepare<[number, number], NarinfoSqlRow>(
      `SELECT id, hash_part AS hashPart, store_path AS storePath, nar_file_id AS narFileId, nar_hash AS narHash,
              nar_size AS narSize, deriver, ca, sigs, narinfo, created_at AS createdAt, last_accessed_at AS lastAccessedAt
       FROM narinfos WHERE id > ? ORDER BY id LIMIT ?`),
    narFile: db.prepare<[number], DumpedNarFile>(
      `SELECT id, file_hash AS fileHash, file_size AS fileSize, compression, nar_hash AS narHash, nar_size AS narSize,
              state, created_at AS createdAt, last_accessed_at AS lastAccessedAt FROM nar_files WHERE id = ?`),
    refs: db.prepare<[number], { hashPart: string, baseName: string }>(
      'SELECT ref_hash_part AS hashPart, ref_base_name AS baseName FROM narinfo_refs WHERE narinfo_id = ? ORDER BY ref_base_name'),
    provenance: db.prepare<[number], ProvenanceSqlRow>(
      `SELECT accepted_at AS acceptedAt, outcome, token_id AS tokenId, token_name AS tokenName, key_names AS keyNames,
              client_address AS clientAddress, upstream FROM provenance WHERE narinfo_id = ? ORDER BY id`),
    tokens: db.prepare<[], DumpedToken>(
      `SELECT id, name, scope, token_hash AS tokenHash, created_at AS createdAt, expires_at AS expiresAt, revoked_at AS revokedAt
       FROM tokens ORDER BY id`),
    pins: db.prepare<[], PinRow>(
      `SELECT hash_part AS hashPart, store_path AS storePath, keep_until AS keepUntil, created_at AS createdAt, note
       FROM pins ORDER BY hash_part`),
    auxFiles: db.prepare<[number, number], DumpedAuxFile>(
      `SELECT rowid AS id, kind, name, content_type AS contentType, content_encoding AS contentEncoding, body,
              created_at AS createdAt FROM aux_files WHERE rowid > ? ORDER BY rowid LIMIT ?`),
    upstreamRecords: db.prepare<[string, number], UpstreamSqlRow>(
      `SELECT hash_part AS hashPart, store_path AS storePath, upstream, nar_url AS narUrl, file_hash AS fileHash,
              file_size AS fileSize, compression, nar_hash AS narHash, nar_size AS narSize, refs, narinfo,
              created_at AS createdAt, refused_at AS refusedAt
       FROM upstream_narinfos WHERE hash_part > ? ORDER BY hash_part LIMIT ?`),
    audit: db.prepare<[number, number], AuditRow>(
      `SELECT id, at, token_id AS tokenId, token_name AS tokenName, client_address AS clientAddress, method, subject,
              hash_part AS hashPart, file_hash AS fileHash, outcome, status, code, reason
       FROM audit_log WHERE id > ? ORDER BY id LIMIT ?`),
    gcRuns: db.prepare<[], DumpedGcRun>(
      `SELECT id, started_at AS startedAt, finished_at AS finishedAt, trigger, store_paths AS storePaths,
              nar_files AS narFiles, bytes, remaining_bytes AS remainingBytes FROM gc_runs ORDER BY id`)
  }
  return {
    // One read transaction per page, so a narinfo and what it names are read together.
    narinfos: async (afterId, limit) => db.transaction(() => s.narinfos.all(afterId, limit).map(({ narFileId, sigs, ...row }) => ({
      ...row,
      sigs: lines(sigs),
      narFile: s.narFile.get(narFileId),
      references: s.refs.all(row.id),
      provenance: s.provenance.all(row.id).map(p => ({ ...p, keyNames: lines(p.keyNames) }))
    })))(),
    tokens: async () => s.tokens.all(),
    pins: async () => s.pins.all(),
    auxFiles: async (afterId, limit) => s.auxFiles.all(afterId, limit),
    upstreamRecords: async (afterHashPart, limit) => s.upstreamRecords.all(afterHashPart, limit).map(({ refs, ...row }) =>
      ({ ...row, references: refs === '' ? [] : refs.split(' ') })),
    audit: async (afterId, limit) => s.audit.all(afterId, limit),
    gcRuns: async () => s.gcRuns.all()
  }
}
