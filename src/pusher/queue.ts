/**
 * The pusher's durable queue, as the pusher sees it: the spool's way in and the status it reports.
 * The jobs and the interface are declared once in types/pusher-queue.d.ts; the SQL is in
 * db/pusher-queue.ts, which `cli` opens and hands over (cli/open-queue.ts), so the pusher never
 * imports the database.
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
import type { Queue, QueueRows } from 'narwhal:pusher-queue'
import { INCOMPLETE_GRACE_MS, listSpool, readSpoolFile, spoolDir, syncDir, type SpoolEntry, type SpoolRead } from './spool.js'

export type { Job, JobFinish, JobState, PathOutcome, Queue, QueueRows } from 'narwhal:pusher-queue'

export interface QueueStatus extends QueueRows {
  /** Spool files the pusher has not moved into the queue yet. */
  spooled: number
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
