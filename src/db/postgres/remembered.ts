/**
 * Answers kept in memory for one generation of the change listener (change-listener.ts): all are
 * forgotten when it moves on. Bounded by entries; the oldest kept goes first.
 */
export class Remembered<V> {
  private readonly maxEntries: number
  private readonly entries = new Map<string, V>()
  private generation = -1

  constructor (maxEntries: number) {
    this.maxEntries = maxEntries
  }

  /** The kept answer, or undefined when none is kept for this generation. */
  get (key: string, generation: number): V | undefined {
    this.keepFor(generation)
    return this.entries.get(key)
  }

  set (key: string, value: V, generation: number): void {
    this.keepFor(generation)
    this.entries.delete(key)
    this.entries.set(key, value)
    if (this.entries.size > this.maxEntries) {
      const oldest = this.entries.keys().next()
      if (oldest.done !== true) this.entries.delete(oldest.value)
    }
  }

  private keepFor (generation: number): void {
    if (generation === this.generation) return
    this.entries.clear()
    this.generation = generation
  }
}
