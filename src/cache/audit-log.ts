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
import type { AuditFilter, AuditRecord, AuditRow, AuditStore } from '../db/metadata-store.js'

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
  private readonly store: AuditStore
  private readonly options: AuditLogOptions
  private pending: AuditRecord[] = []
  private dropped = 0
  private timer: NodeJS.Timeout | undefined
  /** The append under way: one at a time, so entries reach the log in order. */
  private writing: Promise<void> | undefined

  constructor (store: AuditStore, options: AuditLogOptions) {
    this.store = store
    this.options = options
  }

  record (entry: AuditEntry): void {
    this.pending.push(this.toRecord(entry))
    if (this.pending.length > MAX_PENDING) {
      this.dropped += this.pending.length - MAX_PENDING
      this.pending.splice(0, this.pending.length - MAX_PENDING)
    }
    if (this.pending.length >= FLUSH_ENTRIES) this.flushInBackground()
    else this.flushLater()
  }

  private flushInBackground (): void {
    this.flush().catch((err: unknown) => this.options.onError?.(err))
  }

  private flushLater (): void {
    if (this.timer !== undefined) return
    this.timer = setTimeout(() => { this.timer = undefined; this.flushInBackground() }, FLUSH_MS)
    this.timer.unref()
  }

  /**
   * Writes what is waiting (after an append under way). Never rejects: a failure is reported and
   * the entries wait for the next try.
   */
  async flush (): Promise<void> {
    while (this.writing !== undefined) await this.writing
    if (this.timer !== undefined) { clearTimeout(this.timer); this.timer = undefined }
    if (this.pending.length === 0 && this.dropped === 0) return
    this.writing = this.append()
    try {
      await this.writing
    } finally {
      this.writing = undefined
    }
  }

  private async append (): Promise<void> {
    const batch = this.pending
    this.pending = []
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
    const dropped = this.dropped
    this.dropped = 0
    try {
      await this.store.append(batch, this.options.maxEntries)
    } catch (err) {
      if (dropped > 0) batch.shift()
      this.pending = [...batch, ...this.pending]
      this.dropped += dropped
      this.options.onError?.(err)
      this.flushLater()
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

  /** Writes what is waiting and stops the timer; call before closing the metadata store. */
  async close (): Promise<void> {
    await this.flush()
    if (this.timer !== undefined) { clearTimeout(this.timer); this.timer = undefined }
  }
}

/** Entries matching `filter`, oldest first (the newest `filter.limit` when a limit is given). */
export async function readAudit (store: AuditStore, filter: AuditFilter): Promise<AuditRow[]> {
  return await store.query(filter)
}
