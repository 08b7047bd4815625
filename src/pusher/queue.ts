/**
 * The pusher's durable queue, as the pusher sees it: the interface it needs, the spool's way in,
 * and the status it reports. The SQL is in db/pusher-queue.ts; `cli` opens that and hands it
 * over (cli/open-queue.ts), so the pusher never imports the database.
 *
 * Life of a job:
 *
 *   spool/<jobId>.job ──ingest──▶ pending ──claim──▶ running ──▶ done
 *                                   ▲                  │ ├────▶ failed (a path refused: the reason)
 *                                   └── transient ─────┘ │
 *                                       (backoff)        └ kill -9: back to pending on restart
 *
 * Every transition is one transaction of the store, and a spool file is unlinked only after its
 * row is committed, so a crash at any point loses nothing; the job id is unique, so a crash
 * between insert and unlink duplicates nothing.
 */
import { mkdirSync, readdirSync, renameSync, rmSync, statSync } from 'node:fs'
import path from 'node:path'
import { INCOMPLETE_GRACE_MS, listSpool, readSpoolFile, spoolDir, syncDir, type SpoolEntry, type SpoolRead } from './spool.js'

// The same job and row types as db/pusher-queue.ts declares (neither layer may import the other);
// cli/open-queue.ts fails to compile when the two differ.
export type JobState = 'pending' | 'running' | 'done' | 'failed'

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

export interface QueueStatus extends QueueRows {
  /** Spool files the pusher has not moved into the queue yet. */
  spooled: number
}

/** The queue the pusher and `narwhal queue` work with. Times are ms since the epoch. */
export interface Queue {
  /** Adds a job, or returns the one with that jobId already there. */
  enqueue: (entry: SpoolEntry, now?: number) => Job
  /** Adds jobs in one commit. */
  enqueueAll: (entries: SpoolEntry[], now?: number) => void
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

/** Temp files of `narwhal hook` runs that died before their rename: never to be completed. */
function removeStaleTemps (dir: string, now = Date.now()): void {
  let names: string[]
  try {
    names = readdirSync(dir).filter(n => n.startsWith('.tmp-'))
  } catch {
    return
  }
  for (const name of names) {
    try {
      if (now - statSync(path.join(dir, name)).mtimeMs > INCOMPLETE_GRACE_MS) rmSync(path.join(dir, name), { force: true })
    } catch {
      // Renamed or removed meanwhile.
    }
  }
}

/**
 * Moves every complete spool file of `queueDir` into the queue: commit the rows, then unlink the
 * files. A file that is not a spool entry is set aside in spool/bad/ (never retried, never lost).
 * Returns the number of entries moved.
 */
export function ingestSpool (queue: Queue, queueDir: string, log: (line: string) => void = () => {}): number {
  const entries: Array<{ file: string, entry: SpoolEntry }> = []
  for (const f of listSpool(queueDir)) {
    let read: SpoolRead
    try {
      read = readSpoolFile(f)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue
      throw err
    }
    if (read.kind === 'incomplete') continue
    if (read.kind === 'bad') {
      const bad = path.join(spoolDir(queueDir), 'bad')
      mkdirSync(bad, { recursive: true })
      renameSync(f.file, path.join(bad, path.basename(f.file)))
      log(`spool entry ${path.basename(f.file)} is not a build record; moved to spool/bad/`)
      continue
    }
    entries.push({ file: f.file, entry: read.entry })
  }
  // One commit (one fsync) for all the rows, then the files go.
  if (entries.length > 0) queue.enqueueAll(entries.map(e => e.entry))
  for (const { file } of entries) rmSync(file, { force: true })
  if (entries.length > 0) syncDir(spoolDir(queueDir))
  removeStaleTemps(spoolDir(queueDir))
  return entries.length
}

/** The queue's rows plus the spool files not ingested yet. */
export function queueStatus (queue: Queue, queueDir: string, limit?: number): QueueStatus {
  return { ...queue.status(limit), spooled: listSpool(queueDir).length }
}
