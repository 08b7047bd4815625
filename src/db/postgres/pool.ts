/**
 * The connection pool to PostgreSQL: the one place with connection settings, and with what
 * happens when the server goes away.
 *
 * node-postgres drops a connection the server closed (a restart closes them all) and opens a new
 * one for the next query, so narwhal reconnects by itself. What this file adds: a statement or a
 * transaction that failed because its connection was lost before it committed is run again on a
 * new connection, for up to RECONNECT_WINDOW_MS (a restart takes about a second), and then fails
 * with NARWHAL_DATABASE_UNAVAILABLE (503, which Nix and the pusher retry). A transaction whose
 * COMMIT was sent but not answered is not run again (it may have committed): it fails at once.
 */
import pg from 'pg'
import { NarwhalError } from '../../errors.js'
import type { PostgresLocation } from '../database-url.js'

/** How long a statement or transaction keeps trying through lost connections and refused connects. */
export const RECONNECT_WINDOW_MS = 5000

/** A statement waiting this long for a row or table lock fails with NARWHAL_BUSY (SQLite waits as long: busy_timeout). */
export const LOCK_TIMEOUT_MS = 5000
/** A statement running this long is cancelled and fails with NARWHAL_DATABASE_UNAVAILABLE. */
export const STATEMENT_TIMEOUT_MS = 30_000

/** bigint and numeric (sum() of bigint) as numbers: times and sizes, exact up to 2^53. */
const TYPES: pg.CustomTypesConfig = {
  getTypeParser: ((oid: number, format?: string) => {
    if (oid === pg.types.builtins.INT8 || oid === pg.types.builtins.NUMERIC) return (text: string) => Number(text)
    return pg.types.getTypeParser(oid, format as 'text')
  }) as pg.CustomTypesConfig['getTypeParser']
}

/** SQLSTATEs that mean the connection, not the statement, failed: class 08, and the server shutting down or starting. */
function isConnectionSqlState (code: string | undefined): boolean {
  return code !== undefined && (code.startsWith('08') || code === '57P01' || code === '57P02' || code === '57P03')
}

/**
 * A statement that hit lock_timeout (55P03 lock_not_available) as NARWHAL_BUSY, one cancelled by
 * statement_timeout (57014 query_canceled) as NARWHAL_DATABASE_UNAVAILABLE; anything else as is.
 * Both are decided by SQLSTATE; the statement's transaction is rolled back by the caller.
 */
function timedOut (err: unknown): unknown {
  if (!(err instanceof pg.DatabaseError)) return err
  if (err.code === '55P03') return new NarwhalError('NARWHAL_BUSY', `the metadata database (PostgreSQL): a row or table stayed locked longer than ${LOCK_TIMEOUT_MS / 1000} s; retry in a moment (55P03)`, { cause: err })
  if (err.code === '57014') return unavailable(`a statement ran longer than ${STATEMENT_TIMEOUT_MS / 1000} s and was cancelled`, err)
  return err
}

/**
 * Thrown by Tx.query when the transaction is worth another try: the connection under it was lost,
 * or PostgreSQL chose it as a deadlock's victim (two removals locking rows in different orders).
 */
class ConnectionLost extends Error {
  constructor (readonly original: unknown) {
    super('connection to PostgreSQL lost', { cause: original })
  }
}

/** Deadlock victim, or a serialization failure: the whole transaction may simply run again. */
function isRetryableConflict (err: unknown): boolean {
  return err instanceof pg.DatabaseError && (err.code === '40P01' || err.code === '40001')
}

/**
 * Whether an error from the driver is about the connection: a server-side shutdown or connection
 * class SQLSTATE, or an error that is not a database error at all (socket errors, "Connection
 * terminated", connect timeouts). TypeErrors are programming errors (bad parameters).
 */
function isConnectionError (err: unknown): boolean {
  if (err instanceof pg.DatabaseError) return isConnectionSqlState(err.code)
  return err instanceof Error && !(err instanceof TypeError) && !(err instanceof RangeError) && !(err instanceof NarwhalError)
}

export type Row = Record<string, unknown>

/** What a statement returns: its rows (typed by the caller, as the SQL's aliases name them) and how many it changed. */
export interface Result<R> { rows: R[], rowCount: number | null }

/** One statement of a transaction. */
export interface Tx {
  query: <R = Row>(text: string, values?: unknown[]) => Promise<Result<R>>
}

export interface TransactionOptions {
  /** One consistent read-only snapshot (REPEATABLE READ): several reads that must agree. */
  snapshot?: boolean
  /** Its commit does not wait for the disk; the next commit that does takes it along (WAL order). */
  durableWithNext?: boolean
}

export interface PoolOptions {
  /** Connections at most (default 10). */
  max?: number
  /** Told of errors on idle connections (a restart): they are dropped; nothing else to do. */
  onIdleError?: (err: Error) => void
}

const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }

export class PgPool {
  readonly location: PostgresLocation
  private readonly pool: pg.Pool
  private closing: Promise<void> | undefined

  constructor (location: PostgresLocation, options: PoolOptions = {}) {
    this.location = location
    this.pool = new pg.Pool({ ...connectionConfig(location), max: options.max ?? 10, idleTimeoutMillis: 30_000 })
    // Without a listener, an idle connection closed by the server (a restart) would end the process.
    this.pool.on('error', err => { options.onIdleError?.(err) })
  }

  /** One statement on its own (autocommit); retried through lost connections. */
  async query<R = Row> (text: string, values?: unknown[]): Promise<Result<R>> {
    return await this.withRetry(async () => {
      try {
        return await this.pool.query(text, values) as unknown as Result<R>
      } catch (err) {
        throw isConnectionError(err) ? new ConnectionLost(err) : timedOut(err)
      }
    })
  }

  /**
   * Runs `work` in one READ COMMITTED transaction on one connection and commits, or rolls back
   * when it throws. `work` may run more than once (after a lost connection), so it must not act
   * outside the database until it returns.
   */
  async transaction<T> (work: (tx: Tx) => Promise<T>, options: TransactionOptions = {}): Promise<T> {
    return await this.withRetry(async () => await this.connected(async (client) => {
      const tx: Tx = {
        query: async <R>(text: string, values?: unknown[]) => {
          try {
            return await client.query(text, values) as unknown as Result<R>
          } catch (err) {
            throw isConnectionError(err) || isRetryableConflict(err) ? new ConnectionLost(err) : timedOut(err)
          }
        }
      }
      await tx.query(options.snapshot === true ? 'BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY' : 'BEGIN')
      // Like SQLite's synchronous = NORMAL for one transaction: durable with the next commit that waits.
      if (options.durableWithNext === true) await tx.query('SET LOCAL synchronous_commit = off')
      let result: T
      try {
        result = await work(tx)
      } catch (err) {
        if (!(err instanceof ConnectionLost) || isRetryableConflict(err.original)) await tx.query('ROLLBACK')
        throw err
      }
      try {
        await client.query('COMMIT')
      } catch (err) {
        // The COMMIT may have been applied: never run the work again.
        if (isConnectionError(err)) throw unavailable('the connection was lost while committing; the write may or may not have been applied', err)
        throw err
      }
      return result
    }))
  }

  /**
   * Runs `work` on one connection of its own, outside any transaction, and gives the connection
   * back. For what belongs to a session: advisory locks (advisory-lock.ts), migrations.
   * Connection errors are not retried: what the session held is gone with it.
   */
  async onConnection<T> (work: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    try {
      return await this.connected(work)
    } catch (err) {
      if (err instanceof ConnectionLost) throw unavailable('the connection was lost', err.original)
      if (isConnectionError(err)) throw unavailable('the connection was lost', err)
      throw err
    }
  }

  private async connected<T> (work: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    let client: pg.PoolClient
    try {
      client = await this.pool.connect()
    } catch (err) {
      if (isConnectionError(err)) throw new ConnectionLost(err)
      // Refused for good (no such database, authentication): waiting will not help.
      throw unavailable(connectRefusal(err), err)
    }
    let broken: Error | undefined
    // A checked-out connection that fails between statements (its session terminated, the server
    // restarted) says so by an 'error' event, which unheard would end the process.
    const onError = (err: Error): void => { broken = err }
    client.on('error', onError)
    try {
      return await work(client)
    } catch (err) {
      // A connection that failed mid-work is not given to anyone else.
      if (err instanceof ConnectionLost || isConnectionError(err)) broken = err instanceof Error ? err : new Error(String(err))
      throw err
    } finally {
      client.off('error', onError)
      client.release(broken)
    }
  }

  /** Idempotent, as the SQLite store's close is: a second call waits for the first. */
  async close (): Promise<void> {
    this.closing ??= this.pool.end()
    await this.closing
  }

  private async withRetry<T> (attempt: () => Promise<T>): Promise<T> {
    const deadline = Date.now() + RECONNECT_WINDOW_MS
    for (let delay = 50; ; delay = Math.min(delay * 2, 500)) {
      try {
        return await attempt()
      } catch (err) {
        if (!(err instanceof ConnectionLost)) throw err
        if (Date.now() + delay > deadline) throw unavailable('cannot reach it', err.original)
        await sleep(delay)
      }
    }
  }
}

function connectRefusal (err: unknown): string {
  const code = err instanceof pg.DatabaseError ? err.code : undefined
  if (code === '3D000') return 'the database does not exist (narwhal never creates one: create it, then run `narwhal migrate --database …`)'
  if (code === '28P01' || code === '28000') return 'the server refused the user or password'
  return 'the connection was refused'
}

export function connectionConfig (location: PostgresLocation): pg.ClientConfig {
  return {
    host: location.host,
    port: location.port,
    user: location.user,
    password: location.password,
    database: location.database,
    ssl: location.sslmode === 'disable' ? false : { rejectUnauthorized: location.sslmode === 'verify-full' },
    types: TYPES,
    connectionTimeoutMillis: 5000,
    // No statement waits forever on a lock or runs forever (session settings; migrate lifts them).
    lock_timeout: LOCK_TIMEOUT_MS,
    statement_timeout: STATEMENT_TIMEOUT_MS,
    // A server that vanished without closing the connection (a network cut) is noticed.
    keepAlive: true,
    application_name: 'narwhal'
  }
}

/**
 * NARWHAL_DATABASE_UNAVAILABLE with the reason and the error's code, not its text. Clients see
 * this message (a 503), so it names neither the server nor the user: the log has the cause, and
 * the command-line user gave the URL.
 */
export function unavailable (reason: string, cause?: unknown): NarwhalError {
  const code = (cause as { code?: unknown } | undefined)?.code
  const detail = typeof code === 'string' && code !== '' ? ` (${code})` : ''
  return new NarwhalError('NARWHAL_DATABASE_UNAVAILABLE', `the metadata database (PostgreSQL): ${reason}${detail}`, { cause })
}
