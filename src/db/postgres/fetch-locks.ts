/**
 * Which replica fetches an upstream NAR, when several `narwhal serve` share one PostgreSQL: a
 * session-level advisory lock per NAR file, keyed by its file hash, held on one connection of
 * this process kept for these locks alone (so a fetch never holds a pool connection).
 *
 *   claim: pg_try_advisory_lock taken ──▶ 'mine'; the fetch runs; release unlocks
 *          busy ──▶ poll every FETCH_TURN_POLL_MS until it is free (the holder released it, or
 *          died: its session, and the lock with it, ended), then let go at once ──▶ 'abandoned':
 *          the caller looks for the stored NAR and claims again if it is not there
 *
 * The lock says only that its holder let go, not how its fetch ended; looking at the store again
 * tells. A wait longer than FETCH_TURN_WAIT_MS ends 'failed' (the client gets a 502, never a hang).
 * The database unreachable: the fetch is this replica's (a second upstream GET at worst).
 */
import { createHash } from 'node:crypto'
import pg from 'pg'
import type { PostgresLocation } from '../database-url.js'
import type { FetchClaims, FetchTurn } from '../fetch-turns.js'
import { FETCH_LOCK_SPACE } from './advisory-lock.js'
import { connectionConfig } from './pool.js'

export const FETCH_TURN_POLL_MS = 100
/** Longest wait for another replica's fetch; a fetch stalls at most an upstream's answerSeconds between two pieces. */
export const FETCH_TURN_WAIT_MS = 10 * 60_000

/** The lock's second key: 32 bits of the SHA-256 of the file hash (a collision only serializes two fetches). */
export function fetchLockKey (fileHash: string): number {
  return createHash('sha256').update(fileHash).digest().readInt32BE(0)
}

const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }

export class PgFetchLocks implements FetchClaims {
  readonly #location: PostgresLocation
  #session: Promise<pg.Client> | undefined
  #closed = false

  constructor (location: PostgresLocation) {
    this.#location = location
  }

  /** The locks' connection, opened on first use and again after it was lost (its locks with it). */
  async #client (): Promise<pg.Client> {
    if (this.#session === undefined) {
      const client = new pg.Client(connectionConfig(this.#location))
      const session = client.connect().then(() => client)
      const lost = (): void => { if (this.#session === session) this.#session = undefined }
      client.on('error', lost)
      client.on('end', lost)
      session.catch(lost)
      this.#session = session
    }
    return await this.#session
  }

  async claim (fileHash: string): Promise<FetchTurn> {
    const key = fetchLockKey(fileHash)
    const deadline = Date.now() + FETCH_TURN_WAIT_MS
    let waited = false
    for (;;) {
      let client: pg.Client
      let taken: boolean
      try {
        if (this.#closed) return { kind: 'mine', release: () => {} }
        client = await this.#client()
        taken = (await client.query<{ taken: boolean }>('SELECT pg_try_advisory_lock($1, $2) AS taken', [FETCH_LOCK_SPACE, key])).rows[0]?.taken === true
      } catch {
        // No database to take turns through: fetch here rather than fail or hang.
        return { kind: 'mine', release: () => {} }
      }
      const unlock = (): void => {
        // A lost session released it already; the next claim opens another.
        if (this.#session === undefined) return
        client.query('SELECT pg_advisory_unlock($1, $2)', [FETCH_LOCK_SPACE, key]).catch(() => {})
      }
      if (taken && !waited) return { kind: 'mine', release: unlock }
      if (taken) {
        unlock()
        return { kind: 'settled', outcome: 'abandoned' }
      }
      waited = true
      if (Date.now() > deadline) return { kind: 'settled', outcome: 'failed' }
      await sleep(FETCH_TURN_POLL_MS)
    }
  }

  /** Ends the session: any lock still held is released with it. */
  async close (): Promise<void> {
    this.#closed = true
    const session = this.#session
    this.#session = undefined
    if (session !== undefined) await session.then(async client => { await client.end() }, () => {})
  }
}
