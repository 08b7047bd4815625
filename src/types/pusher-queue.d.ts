/**
 * The pusher's durable queue: the one declaration of its jobs, rows and interface. The pusher
 * works with it (pusher/queue.ts, where the life of a job is drawn) and db/pusher-queue.ts
 * implements it in SQL; neither layer may import the other, and this folder imports nothing, so
 * both import these types by this module name (`import type`: erased, nothing loads at run time).
 * Times are ms since the epoch.
 */
declare module 'narwhal:pusher-queue' {
  export type JobState = 'pending' | 'running' | 'done' | 'failed'

  /** One post-build-hook run to push: what a spool file says. */
  export interface QueueEntry {
    jobId: string
    drvPath: string
    outPaths: string[]
  }

  export interface Job {
    seq: number
    jobId: string
    drvPath: string
    outPaths: string[]
    state: JobState
    attempts: number
    nextAttemptAt: number
    lastError: string | null
    note: string | null
    pathsTotal: number
    pathsUploaded: number
    bytesUploaded: number
    createdAt: number
    updatedAt: number
  }

  export interface JobFinish {
    state: 'done' | 'failed'
    lastError?: string | null
    note?: string | null
    pathsTotal: number
    pathsUploaded: number
    bytesUploaded: number
  }

  export interface PathOutcome {
    storePath: string
    state: 'failed' | 'dropped'
    reason: string
    jobSeq: number | null
    updatedAt: number
  }

  /** What the queue holds: counts, the latest jobs of each unfinished or failed state, path outcomes. */
  export interface QueueRows {
    counts: Record<JobState, number>
    pending: Job[]
    running: Job[]
    failed: Job[]
    paths: PathOutcome[]
    lastSeq: number
  }

  /** The queue the pusher and `narwhal queue` work with. */
  export interface Queue {
    /** Adds a job, or returns the one with that jobId already there. */
    enqueue: (entry: QueueEntry, now?: number) => Job
    /** Adds jobs in one commit. */
    enqueueAll: (entries: QueueEntry[], now?: number) => void
    /** After a crash or kill -9, jobs that were in flight start again; returns how many. */
    recoverRunning: (now?: number) => number
    /** The oldest pending job that is due, marked running; undefined when none is due. */
    claimNext: (now?: number) => Job | undefined
    /** Up to `limit` of the oldest pending jobs that are due, marked running, oldest first. */
    claimDue: (limit: number, now?: number) => Job[]
    /** When the next pending job becomes due, or undefined when nothing is pending. */
    earliestPendingAt: () => number | undefined
    job: (seq: number) => Job | undefined
    finish: (seq: number, outcome: JobFinish, now?: number) => void
    retryLater: (seq: number, delayMs: number, lastError: string, now?: number) => void
    setPathOutcome: (storePath: string, state: 'failed' | 'dropped', reason: string, jobSeq: number | null, now?: number) => void
    clearPathOutcome: (storePath: string) => void
    lastSeq: () => number
    /** `fn`'s transitions in one commit: a kill -9 keeps all of them or none. */
    inOneCommit: <T>(fn: () => T) => T
    /** Jobs with seq > `after`, plus every unfinished job, with their states (for `queue wait`). */
    jobsSince: (after: number) => Array<{ seq: number, state: JobState }>
    status: (limit?: number) => QueueRows
    close: () => void
  }
}
