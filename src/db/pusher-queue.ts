/**
 * The SQL of the pusher's durable queue: a SQLite database of its own, `<queueDir>/queue.sqlite`,
 * with its own migrations (`migrations/pusher/`), run by the server's migrator. It implements the
 * queue declared in types/pusher-queue.d.ts (the pusher's side is pusher/queue.ts, where the life
 * of a job is drawn); `cli` wires it in (cli/open-queue.ts).
 *
 * Every transition is one SQLite transaction (WAL, synchronous=FULL); the job id is UNIQUE, so
 * an entry enqueued twice (a crash between insert and the spool file's unlink) is one job.
 */
import { mkdirSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Job, JobFinish, JobState, PathOutcome, Queue, QueueEntry, QueueRows } from 'narwhal:pusher-queue'
import { migrate, openDatabase, type Db } from './database.js'

export const PUSHER_MIGRATIONS_DIR = fileURLToPath(new URL('../../../migrations/pusher/', import.meta.url))

/** A job as stored: outPaths is one space-separated string. */
type JobRow = Omit<Job, 'outPaths'> & { outPaths: string }

const JOB_COLUMNS = `seq, job_id AS jobId, drv_path AS drvPath, out_paths AS outPaths, state, attempts,
  next_attempt_at AS nextAttemptAt, last_error AS lastError, note, paths_total AS pathsTotal,
  paths_uploaded AS pathsUploaded, bytes_uploaded AS bytesUploaded, created_at AS createdAt, updated_at AS updatedAt`

function toJob (row: JobRow): Job {
  return { ...row, outPaths: row.outPaths.split(' ').filter(p => p !== '') }
}

export function queueDatabasePath (queueDir: string): string {
  return path.join(queueDir, 'queue.sqlite')
}

export class SqlitePusherQueue implements Queue {
  readonly db: Db
  private readonly stmts

  constructor (db: Db) {
    this.db = db
    this.stmts = {
      insert: db.prepare(`INSERT INTO jobs (job_id, drv_path, out_paths, state, next_attempt_at, created_at, updated_at)
        VALUES (@jobId, @drvPath, @outPaths, 'pending', @now, @now, @now) ON CONFLICT (job_id) DO NOTHING`),
      byJobId: db.prepare<[string], JobRow>(`SELECT ${JOB_COLUMNS} FROM jobs WHERE job_id = ?`),
      bySeq: db.prepare<[number], JobRow>(`SELECT ${JOB_COLUMNS} FROM jobs WHERE seq = ?`),
      due: db.prepare<[number, number], JobRow>(`SELECT ${JOB_COLUMNS} FROM jobs WHERE state = 'pending' AND next_attempt_at <= ?
        ORDER BY seq LIMIT ?`),
      earliestPending: db.prepare<[], { at: number | null }>("SELECT min(next_attempt_at) AS at FROM jobs WHERE state = 'pending'"),
      claim: db.prepare("UPDATE jobs SET state = 'running', updated_at = ? WHERE seq = ? AND state = 'pending'"),
      recover: db.prepare("UPDATE jobs SET state = 'pending', updated_at = ? WHERE state = 'running'"),
      finish: db.prepare(`UPDATE jobs SET state = @state, last_error = @lastError, note = @note, paths_total = @pathsTotal,
        paths_uploaded = @pathsUploaded, bytes_uploaded = @bytesUploaded, updated_at = @now WHERE seq = @seq`),
      retry: db.prepare(`UPDATE jobs SET state = 'pending', attempts = attempts + 1, next_attempt_at = @nextAttemptAt,
        last_error = @lastError, updated_at = @now WHERE seq = @seq`),
      counts: db.prepare<[], { state: JobState, n: number }>('SELECT state, count(*) AS n FROM jobs GROUP BY state'),
      listState: db.prepare<[string, number], JobRow>(`SELECT ${JOB_COLUMNS} FROM jobs WHERE state = ? ORDER BY seq DESC LIMIT ?`),
      lastSeq: db.prepare<[], { seq: number | null }>('SELECT max(seq) AS seq FROM jobs'),
      unfinishedOrAfter: db.prepare<[number], { seq: number, state: JobState }>(
        "SELECT seq, state FROM jobs WHERE seq > ? OR state IN ('pending', 'running')"),
      setOutcome: db.prepare(`INSERT INTO path_outcomes (store_path, state, reason, job_seq, updated_at)
        VALUES (@storePath, @state, @reason, @jobSeq, @now)
        ON CONFLICT (store_path) DO UPDATE SET state = excluded.state, reason = excluded.reason,
          job_seq = excluded.job_seq, updated_at = excluded.updated_at`),
      clearOutcome: db.prepare('DELETE FROM path_outcomes WHERE store_path = ?'),
      outcomes: db.prepare<[number], PathOutcome>(`SELECT store_path AS storePath, state, reason, job_seq AS jobSeq,
        updated_at AS updatedAt FROM path_outcomes ORDER BY updated_at DESC LIMIT ?`)
    }
  }

  /** Opens (creating and migrating) the queue in `queueDir`. */
  static open (queueDir: string): SqlitePusherQueue {
    mkdirSync(queueDir, { recursive: true })
    const db = openDatabase(queueDatabasePath(queueDir))
    migrate(db, PUSHER_MIGRATIONS_DIR)
    return new SqlitePusherQueue(db)
  }

  close (): void {
    this.db.close()
  }

  enqueue (entry: QueueEntry, now = Date.now()): Job {
    this.stmts.insert.run({ jobId: entry.jobId, drvPath: entry.drvPath, outPaths: entry.outPaths.join(' '), now })
    const row = this.stmts.byJobId.get(entry.jobId)
    if (row === undefined) throw new Error('queue row vanished after insert')
    return toJob(row)
  }

  /** Adds jobs in one transaction (one commit for many spool entries). */
  enqueueAll (entries: QueueEntry[], now = Date.now()): void {
    this.db.transaction(() => { for (const entry of entries) this.enqueue(entry, now) })()
  }

  /** After a crash or kill -9, jobs that were in flight start again. */
  recoverRunning (now = Date.now()): number {
    return this.stmts.recover.run(now).changes
  }

  /** The oldest pending job that is due, marked running; undefined when none is due. */
  claimNext (now = Date.now()): Job | undefined {
    return this.claimDue(1, now)[0]
  }

  /** Up to `limit` of the oldest pending jobs that are due, marked running, oldest first. */
  claimDue (limit: number, now = Date.now()): Job[] {
    return this.db.transaction((): Job[] => {
      const rows = this.stmts.due.all(now, limit)
      for (const row of rows) this.stmts.claim.run(now, row.seq)
      return rows.map(row => toJob({ ...row, state: 'running' }))
    }).immediate()
  }

  /** When the next pending job becomes due (ms), or undefined when nothing is pending. */
  earliestPendingAt (): number | undefined {
    return this.stmts.earliestPending.get()?.at ?? undefined
  }

  job (seq: number): Job | undefined {
    const row = this.stmts.bySeq.get(seq)
    return row === undefined ? undefined : toJob(row)
  }

  finish (seq: number, outcome: JobFinish, now = Date.now()): void {
    this.stmts.finish.run({
      seq,
      state: outcome.state,
      lastError: outcome.lastError ?? null,
      note: outcome.note ?? null,
      pathsTotal: outcome.pathsTotal,
      pathsUploaded: outcome.pathsUploaded,
      bytesUploaded: outcome.bytesUploaded,
      now
    })
  }

  retryLater (seq: number, delayMs: number, lastError: string, now = Date.now()): void {
    this.stmts.retry.run({ seq, nextAttemptAt: now + delayMs, lastError, now })
  }

  setPathOutcome (storePath: string, state: 'failed' | 'dropped', reason: string, jobSeq: number | null, now = Date.now()): void {
    this.stmts.setOutcome.run({ storePath, state, reason, jobSeq, now })
  }

  clearPathOutcome (storePath: string): void {
    this.stmts.clearOutcome.run(storePath)
  }

  /** Runs `fn`'s transitions as one transaction: one commit (one fsync) for all of them. */
  inOneCommit<T> (fn: () => T): T {
    return this.db.transaction(fn)()
  }

  lastSeq (): number {
    return this.stmts.lastSeq.get()?.seq ?? 0
  }

  /** Jobs with seq > `after`, plus every unfinished job, with their states (for `queue wait`). */
  jobsSince (after: number): Array<{ seq: number, state: JobState }> {
    return this.stmts.unfinishedOrAfter.all(after)
  }

  status (limit = 20): QueueRows {
    const counts: Record<JobState, number> = { pending: 0, running: 0, done: 0, failed: 0 }
    for (const { state, n } of this.stmts.counts.all()) counts[state] = n
    const list = (state: JobState): Job[] => this.stmts.listState.all(state, limit).map(toJob)
    return {
      counts,
      pending: list('pending'),
      running: list('running'),
      failed: list('failed'),
      paths: this.stmts.outcomes.all(limit),
      lastSeq: this.lastSeq()
    }
  }
}
