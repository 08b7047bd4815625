/**
 * Single-writer jobs across replicas: PostgreSQL advisory locks, not file locks (replicas share no
 * folder). A session-level lock lives as long as the connection that took it, so a replica killed
 * mid-job, or cut off from the database, lets the next one take over at once; nothing to clean up.
 *
 * Keys are two 32-bit integers: narwhal's own first half, so other applications sharing the
 * database keep theirs, and one number per job.
 */
import type pg from 'pg'
import type { PgPool, Tx } from './pool.js'

/** "nw" and a version: the first half of every key narwhal takes. */
const NARWHAL_LOCK_SPACE = 0x6e77_0001
/** The first half of the keys of upstream NAR fetches (fetch-locks.ts), one lock per NAR file. */
export const FETCH_LOCK_SPACE = 0x6e77_0002

/** The jobs of which only one runs at a time across every replica and command. */
export const SINGLE_WRITER_JOBS = { migrate: 1, gc: 2, fsck: 3, export: 4 } as const
export type SingleWriterJob = keyof typeof SINGLE_WRITER_JOBS

export type LockedOutcome<T> = { kind: 'ran', value: T } | { kind: 'busy' }

/**
 * Runs `work` while holding the job's lock, on a connection kept for it, or answers 'busy' at
 * once when another session (another replica, a `narwhal gc`) holds it. `work` uses the pool for
 * its statements; the lock's connection only holds the lock. When that session is lost (the
 * server restarted, the connection cut), the lock is gone with it: `signal` aborts, and a job
 * should stop at its next step (each of gc's steps re-checks what it removes anyway).
 */
export async function withJobLock<T> (pool: PgPool, job: SingleWriterJob, work: (signal: AbortSignal) => Promise<T>): Promise<LockedOutcome<T>> {
  return await pool.onConnection(async (client: pg.PoolClient) => {
    const taken = await client.query<{ taken: boolean }>('SELECT pg_try_advisory_lock($1, $2) AS taken', [NARWHAL_LOCK_SPACE, SINGLE_WRITER_JOBS[job]])
    if (taken.rows[0]?.taken !== true) return { kind: 'busy' }
    const lost = new AbortController()
    const onLost = (): void => { lost.abort(new Error(`the ${job} lock's session to PostgreSQL was lost`)) }
    client.once('error', onLost)
    client.once('end', onLost)
    try {
      return { kind: 'ran', value: await work(lost.signal) }
    } finally {
      client.off('error', onLost)
      client.off('end', onLost)
      // A lost session released the lock already.
      if (!lost.signal.aborted) await client.query('SELECT pg_advisory_unlock($1, $2)', [NARWHAL_LOCK_SPACE, SINGLE_WRITER_JOBS[job]])
    }
  })
}

/** Waits for the job's lock for the rest of the transaction (released by its commit or rollback). */
export async function lockJobForTransaction (tx: Tx, job: SingleWriterJob): Promise<void> {
  await tx.query('SELECT pg_advisory_xact_lock($1, $2)', [NARWHAL_LOCK_SPACE, SINGLE_WRITER_JOBS[job]])
}
