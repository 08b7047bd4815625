/**
 * The audit log: one entry for every write request (uploads of NARs, narinfos, logs, listings,
 * realisations, debuginfo links, nix-cache-info, each part of an upload batch) and every refusal
 * of one, with the time, the token, the client's address, what was written, the outcome and the
 * refusal code. Read with `narwhal audit`.
 *
 * Entries are kept in memory and appended to the database at most FLUSH_MS later (or at once when
 * FLUSH_ENTRIES are waiting), in one transaction that does not wait for the disk: a flood of
 * refused requests costs one small write a second, not an fsync each. A crash can lose the last
 * second of entries; the provenance of an accepted narinfo (cache/provenance.ts) is written in the
 * narinfo's own transaction and cannot be lost so. The log keeps its newest `maxEntries` entries
 * (audit.maxEntries), so it cannot fill the disk.
 */
import type { Db } from '../db/database.js'
import { ProvenanceSql, type AuditFilter, type AuditRecord, type AuditRow } from '../db/provenance.js'

export type { AuditFilter, AuditRow }

export type AuditOutcome = 'created' | 'merged' | 'unchanged' | 'accepted' | 'refused'

export interface AuditEntry {
  tokenId: number | null
  tokenName: string | null
  clientAddress: string | null
  /** PUT, POST, or BATCH for one part of an upload batch. */
  method: string
  /** The store path when known, else the URL path or the batch part's name. */
  subject: string
  hashPart?: string | null
  fileHash?: string | null
  outcome: AuditOutcome
  status: number
  code?: string | null
  reason?: string | null
}

/** Entries wait at most this long in memory. */
export const FLUSH_MS = 1000
/** A flush happens at once when this many are waiting. */
export const FLUSH_ENTRIES = 256
/** When the database refuses writes for long, at most this many wait; older ones are dropped (and counted). */
const MAX_PENDING = 10_000
/** Long client text (a refusal echoes input) is cut to this. */
const MAX_TEXT = 300

function clip (text: string | null | undefined): string | null {
  if (text === null || text === undefined) return null
  return text.length > MAX_TEXT ? text.slice(0, MAX_TEXT) + '…' : text
}

export interface AuditLogOptions {
  maxEntries: number
  onError?: (err: unknown) => void
  clock?: () => number
}

export class AuditLog {
  private readonly sql: ProvenanceSql
  private readonly options: AuditLogOptions
  private pending: AuditRecord[] = []
  private dropped = 0
  private timer: NodeJS.Timeout | undefined

  constructor (db: Db, options: AuditLogOptions) {
    this.sql = new ProvenanceSql(db)
    this.options = options
  }

  record (entry: AuditEntry): void {
    this.pending.push(this.toRecord(entry))
    if (this.pending.length > MAX_PENDING) {
      this.dropped += this.pending.length - MAX_PENDING
      this.pending.splice(0, this.pending.length - MAX_PENDING)
    }
    if (this.pending.length >= FLUSH_ENTRIES) this.flush()
    else if (this.timer === undefined) {
      this.timer = setTimeout(() => { this.timer = undefined; this.flush() }, FLUSH_MS)
      this.timer.unref()
    }
  }

  /** Writes what is waiting. Never throws: a failure is reported and the entries wait for the next try. */
  flush (): void {
    if (this.timer !== undefined) { clearTimeout(this.timer); this.timer = undefined }
    if (this.pending.length === 0 && this.dropped === 0) return
    const batch = this.pending
    if (this.dropped > 0) {
      batch.unshift(this.toRecord({
        tokenId: null,
        tokenName: null,
        clientAddress: null,
        method: 'AUDIT',
        subject: 'audit log',
        outcome: 'refused',
        status: 0,
        code: 'NARWHAL_INTERNAL',
        reason: `${this.dropped} entries were dropped: the database refused writes for too long`
      }))
    }
    try {
      this.sql.appendAudit(batch, this.options.maxEntries)
      this.pending = []
      this.dropped = 0
    } catch (err) {
      if (this.dropped > 0) batch.shift()
      this.options.onError?.(err)
      if (this.timer === undefined) {
        this.timer = setTimeout(() => { this.timer = undefined; this.flush() }, FLUSH_MS)
        this.timer.unref()
      }
    }
  }

  private toRecord (entry: AuditEntry): AuditRecord {
    return {
      at: (this.options.clock ?? Date.now)(),
      tokenId: entry.tokenId,
      tokenName: clip(entry.tokenName),
      clientAddress: clip(entry.clientAddress),
      method: entry.method,
      subject: clip(entry.subject) ?? '',
      hashPart: entry.hashPart ?? null,
      fileHash: entry.fileHash ?? null,
      outcome: entry.outcome,
      status: entry.status,
      code: entry.code ?? null,
      reason: clip(entry.reason)
    }
  }

  /** Writes what is waiting and stops the timer; call before closing the database. */
  close (): void {
    this.flush()
    if (this.timer !== undefined) { clearTimeout(this.timer); this.timer = undefined }
  }
}

/** Entries matching `filter`, oldest first (the newest `filter.limit` when a limit is given). */
export function readAudit (db: Db, filter: AuditFilter): AuditRow[] {
  return new ProvenanceSql(db).queryAudit(filter)
}
