/**
 * Notes which narinfos and NAR files are read, for least-recently-used garbage collection,
 * without making reads slower. A narinfo hit is answered from memory or one indexed lookup; an
 * UPDATE per read would add a write transaction (and a WAL fsync) to each. Instead a read adds
 * its key to a set, and the sets are written in one short transaction every few seconds, when
 * they grow large, and when the server closes.
 *
 * Several server processes may share the database: each has its own tracker, and their flushes
 * are ordinary short write transactions (SQLite serialises them; busy_timeout makes them wait).
 * A flush that fails is dropped and reported: the paths it named only look a little older.
 */
import type { RetentionStore } from '../db/metadata-store.js'

export interface AccessTrackerOptions {
  /** How often pending reads are written. */
  flushIntervalMs?: number
  /** Pending keys (narinfos plus NAR files) that trigger a flush before the interval. */
  maxPending?: number
  onError?: (err: unknown) => void
}

export class AccessTracker {
  private readonly retention: RetentionStore
  private readonly maxPending: number
  private readonly onError: (err: unknown) => void
  private narinfos = new Set<string>()
  private narFiles = new Set<string>()
  private readonly timer: NodeJS.Timeout

  constructor (retention: RetentionStore, options: AccessTrackerOptions = {}) {
    this.retention = retention
    this.maxPending = options.maxPending ?? 100_000
    this.onError = options.onError ?? (() => {})
    this.timer = setInterval(() => { this.flushInBackground() }, options.flushIntervalMs ?? 5000)
    // Never the reason a process stays alive.
    this.timer.unref()
  }

  /** A narinfo was served (GET or HEAD). */
  narinfo (hashPart: string): void {
    this.narinfos.add(hashPart)
    if (this.pending >= this.maxPending) this.flushInBackground()
  }

  /** A NAR file was served; this is use of every path whose narinfo names it. */
  narFile (fileHash: string): void {
    this.narFiles.add(fileHash)
    if (this.pending >= this.maxPending) this.flushInBackground()
  }

  /** flush, whose failures go to onError like its own. */
  private flushInBackground (): void {
    this.flush().catch(this.onError)
  }

  /** Reads noted and not yet written. */
  get pending (): number {
    return this.narinfos.size + this.narFiles.size
  }

  /** Writes the pending reads as used at `now`. */
  async flush (now = Date.now()): Promise<void> {
    if (this.narinfos.size === 0 && this.narFiles.size === 0) return
    const narinfos = this.narinfos
    const narFiles = this.narFiles
    this.narinfos = new Set()
    this.narFiles = new Set()
    try {
      await this.retention.touch(narinfos, narFiles, now)
    } catch (err) {
      this.onError(err)
    }
  }

  /** Stops the timer and writes what is pending; call before the database closes. */
  async close (): Promise<void> {
    clearInterval(this.timer)
    await this.flush()
  }
}
