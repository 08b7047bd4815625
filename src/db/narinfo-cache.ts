/**
 * Narinfos as served, kept in memory by hash part: the bytes of a stored narinfo, or null for a
 * hash part the database was asked for and does not hold. Least recently used entries go first
 * once the entries' bytes pass the bound.
 *
 * Pure bookkeeping: what makes an entry stale (a write by this process or by another one) is
 * decided by its owner, Metadata (db/metadata.ts).
 */

/** What an entry costs beyond its body: the key, the Map slot and the Buffer object, roughly. */
const ENTRY_OVERHEAD_BYTES = 160

export class NarinfoCache {
  private readonly maxBytes: number
  /** Map keeps insertion order: the first key is the least recently used. */
  private readonly entries = new Map<string, Buffer | null>()
  private bytes = 0

  constructor (maxBytes: number) {
    this.maxBytes = maxBytes
  }

  /** The entry (null: known to be absent), or undefined when nothing is known. */
  get (hashPart: string): Buffer | null | undefined {
    const entry = this.entries.get(hashPart)
    if (entry === undefined) return undefined
    // Move it to the most recently used end.
    this.entries.delete(hashPart)
    this.entries.set(hashPart, entry)
    return entry
  }

  set (hashPart: string, body: Buffer | null): void {
    this.delete(hashPart)
    const cost = costOf(body)
    if (cost > this.maxBytes) return
    this.entries.set(hashPart, body)
    this.bytes += cost
    for (const [oldest, entry] of this.entries) {
      if (this.bytes <= this.maxBytes) break
      this.entries.delete(oldest)
      this.bytes -= costOf(entry)
    }
  }

  delete (hashPart: string): void {
    const entry = this.entries.get(hashPart)
    if (entry === undefined) return
    this.entries.delete(hashPart)
    this.bytes -= costOf(entry)
  }

  clear (): void {
    this.entries.clear()
    this.bytes = 0
  }

  /** Entries and their accounted bytes, for tests. */
  get size (): { entries: number, bytes: number } {
    return { entries: this.entries.size, bytes: this.bytes }
  }
}

function costOf (body: Buffer | null): number {
  return ENTRY_OVERHEAD_BYTES + (body?.length ?? 0)
}
