/**
 * Response bodies kept in memory by key: the bytes of a narinfo or of a small NAR file, or null
 * for a key known to have none. Least recently used entries go first once the entries' bytes
 * pass the bound.
 *
 * Pure bookkeeping: whether entries went stale (a write by this process or by another one) is
 * said by the generation its owner passes to keepFor (Metadata.servedGeneration, db/metadata.ts).
 */

/** What an entry costs beyond its body: the key, the Map slot and the Buffer object, roughly. */
const ENTRY_OVERHEAD_BYTES = 160

export class BodyCache {
  private readonly maxBytes: number
  /** Map keeps insertion order: the first key is the least recently used. */
  private readonly entries = new Map<string, Buffer | null>()
  private bytes = 0
  /** The generation the entries were read in. */
  private generation = -1

  constructor (maxBytes: number) {
    this.maxBytes = maxBytes
  }

  /** Forgets every entry unless `generation` is the one they were read in; call before get. */
  keepFor (generation: number): void {
    if (generation === this.generation) return
    this.clear()
    this.generation = generation
  }

  /** The entry (null: known to be absent), or undefined when nothing is known. */
  get (key: string): Buffer | null | undefined {
    const entry = this.entries.get(key)
    if (entry === undefined) return undefined
    // Move it to the most recently used end.
    this.entries.delete(key)
    this.entries.set(key, entry)
    return entry
  }

  set (key: string, body: Buffer | null): void {
    this.delete(key)
    const cost = costOf(body)
    if (cost > this.maxBytes) return
    this.entries.set(key, body)
    this.bytes += cost
    for (const [oldest, entry] of this.entries) {
      if (this.bytes <= this.maxBytes) break
      this.entries.delete(oldest)
      this.bytes -= costOf(entry)
    }
  }

  private delete (key: string): void {
    const entry = this.entries.get(key)
    if (entry === undefined) return
    this.entries.delete(key)
    this.bytes -= costOf(entry)
  }

  private clear (): void {
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
