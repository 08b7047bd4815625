/**
 * Cross-replica freshness: one connection per process LISTENs on narwhal_changes, where the
 * schema's triggers NOTIFY at each commit that may change what GET answers (narinfos, NAR file
 * states, upstream records; migrations/postgres/0001_init.sql). Every notification, and every
 * loss or return of this connection, moves a generation number on; whoever keeps answers in
 * memory keeps them only as long as the generation stays (Freshness).
 *
 * While the connection is down nothing in memory is trusted (notifications sent meanwhile are
 * lost): `current()` then moves on at every call, so every read goes to the database. It
 * reconnects by itself, backing off up to two seconds between tries.
 */
import pg from 'pg'
import type { PostgresLocation } from '../database-url.js'
import { connectionConfig, unavailable } from './pool.js'

export const CHANGES_CHANNEL = 'narwhal_changes'
const RETRY_MIN_MS = 100
const RETRY_MAX_MS = 2000

export class ChangeListener {
  private readonly location: PostgresLocation
  private client: pg.Client | undefined
  private listening = false
  private closed = false
  private retryMs = RETRY_MIN_MS
  private retryTimer: NodeJS.Timeout | undefined
  private generation = 0

  constructor (location: PostgresLocation) {
    this.location = location
  }

  /** Connects and listens; throws NARWHAL_DATABASE_UNAVAILABLE when the first connection fails. */
  async start (): Promise<void> {
    try {
      await this.connect()
    } catch (err) {
      throw unavailable('cannot listen for changes', err)
    }
  }

  /**
   * A number that moves on whenever another session may have committed a change (or this
   * process cannot tell: not listening). Read it before a read whose answer is to be kept.
   */
  current (): number {
    if (!this.listening) this.generation++
    return this.generation
  }

  /** This process wrote: what it keeps in memory may be stale at once, before its own NOTIFY comes back. */
  changed (): void {
    this.generation++
  }

  /** Whether a read started at `generation` may be kept: listening all along, nothing changed since. */
  stillAt (generation: number): boolean {
    return this.listening && this.generation === generation
  }

  get isListening (): boolean {
    return this.listening
  }

  async close (): Promise<void> {
    this.closed = true
    clearTimeout(this.retryTimer)
    this.listening = false
    const client = this.client
    this.client = undefined
    await client?.end().catch(() => {})
  }

  private async connect (): Promise<void> {
    const client = new pg.Client({ ...connectionConfig(this.location), keepAlive: true })
    client.on('notification', () => { this.generation++ })
    // Either event means the session is gone, and the notifications sent meanwhile with it.
    client.on('error', () => { this.lost(client) })
    client.on('end', () => { this.lost(client) })
    try {
      await client.connect()
      await client.query(`LISTEN ${CHANGES_CHANNEL}`)
    } catch (err) {
      await client.end().catch(() => {})
      throw err
    }
    if (this.closed) {
      await client.end().catch(() => {})
      return
    }
    this.client = client
    this.retryMs = RETRY_MIN_MS
    // Whatever was committed while nobody listened: forget it all.
    this.generation++
    this.listening = true
  }

  private lost (client: pg.Client): void {
    if (this.client !== client) return
    this.client = undefined
    this.listening = false
    this.generation++
    client.end().catch(() => {})
    this.scheduleReconnect()
  }

  private scheduleReconnect (): void {
    if (this.closed) return
    clearTimeout(this.retryTimer)
    this.retryTimer = setTimeout(() => {
      this.connect().catch(() => {
        this.retryMs = Math.min(this.retryMs * 2, RETRY_MAX_MS)
        this.scheduleReconnect()
      })
    }, this.retryMs)
    // A process on its way out does not wait for the database to come back.
    this.retryTimer.unref()
  }
}
