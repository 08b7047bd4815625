/**
 * The long-running pusher: drains the spool into the queue and the queue into the cache.
 *
 *   loop: spool/*.job ──▶ queue (SQLite) ──▶ claim the due jobs ──▶ resolve outputs
 *         (OUT_PATHS, or the derivation's outputs) ──▶ drop collected paths ──▶ closures ──▶ push
 *
 * The jobs due at once (up to JOBS_PER_PUSH) go up as one push, NARs `concurrency` at a time.
 * Transient failures put the jobs back with exponential backoff; refusals finish it as failed with the server's reason; paths
 * Nix collected before the upload are dropped with a note. Stopping (SIGTERM) lets the current
 * request fail fast and leaves the job to be resumed on the next start.
 */
import { rmSync } from 'node:fs'
import path from 'node:path'
import type { SecretKey } from '../signing/keys.js'
import { baseName, closureInfo, invalidPaths, NixCommandError, outputsOf, type PathInfo } from './closure.js'
import type { PusherConfig } from './config.js'
import { pushClosure, pushSettings, resultFor, type PushResult } from './push-closure.js'
import { ingestSpool, type Job, type Queue } from './queue.js'
import { backoffDelay, RefusedError, sleep, TransientError, type BackoffOptions } from './retry.js'
import type { CacheClient } from './uploader.js'

export type Logger = (line: string) => void

export interface ServiceOptions {
  config: Readonly<PusherConfig>
  queue: Queue
  client: CacheClient
  keys: readonly SecretKey[]
  log: Logger
  signal: AbortSignal
}

export function formatBytes (n: number): string {
  if (n < 1024) return `${n} B`
  const units = ['KiB', 'MiB', 'GiB', 'TiB']
  let v = n / 1024
  let i = 0
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++ }
  return `${v.toFixed(v < 10 ? 2 : 1)} ${units[i]}`
}

export function summarise (roots: string[], result: PushResult): string {
  const names = roots.map(r => path.basename(r)).join(' ')
  return `pushed ${names}: ${result.closureSize} paths in closure, ${result.uploaded.length} uploaded ` +
    `(${formatBytes(result.narBytes)} NAR, ${formatBytes(result.bytesSent)} sent), ${result.alreadyPresent} already cached` +
    (result.skippedUpstream > 0 ? `, ${result.skippedUpstream} skipped (upstream)` : '') +
    (result.failed.length > 0 ? `, ${result.failed.length} FAILED` : '') +
    ` in ${(result.elapsedMs / 1000).toFixed(2)} s`
}

export function backoffFor (config: Readonly<PusherConfig>): BackoffOptions {
  return { baseMs: 1000, maxMs: config.maxRetryDelaySeconds * 1000 }
}

export interface JobOutcome {
  state: 'done' | 'failed' | 'retry'
  message: string
}

/** Works one claimed job to its next state. Never throws: every error becomes a state. */
export async function processJob (job: Job, options: ServiceOptions): Promise<JobOutcome> {
  return (await processJobs([job], options))[0] as JobOutcome
}

/** Jobs claimed together, whose closures go up as one push. */
export const JOBS_PER_PUSH = 200

/**
 * Works claimed jobs to their next states, their closures pushed together: one store query, one
 * missing-paths question and shared batches for all of them, where one job at a time cost a few
 * Nix processes and requests per build (BENCHMARKS.md, the queue drain). Each job is finished with
 * its own closure's share of the result. Never throws: every error becomes a state.
 */
export async function processJobs (jobs: Job[], options: ServiceOptions): Promise<JobOutcome[]> {
  const outcomes = new Map<number, JobOutcome>()
  // Outputs first, job by job: a derivation that cannot be read concerns its own job only.
  const live: Array<{ job: Job, outs: string[] }> = []
  for (const job of jobs) {
    try {
      const outs = await outputsFor(job, options)
      if (outs === undefined) outcomes.set(job.seq, { state: 'done', message: queueNote(job, options) })
      else live.push({ job, outs })
    } catch (err) {
      outcomes.set(job.seq, failJob(job, err, options))
    }
  }
  if (live.length > 0) {
    try {
      const results = await pushJobs(live, options)
      for (const [seq, outcome] of results) outcomes.set(seq, outcome)
    } catch (err) {
      for (const { job } of live) outcomes.set(job.seq, failJob(job, err, options))
    }
  }
  return jobs.map(job => outcomes.get(job.seq) ?? { state: 'retry', message: 'not processed' })
}

/** The job's outputs; undefined when the job was finished here (nothing to push). */
async function outputsFor (job: Job, options: ServiceOptions): Promise<string[] | undefined> {
  const { queue, log } = options
  if (job.outPaths.length > 0) return job.outPaths
  if (job.drvPath === '') {
    queue.finish(job.seq, { state: 'done', note: 'nothing recorded to push', pathsTotal: 0, pathsUploaded: 0, bytesUploaded: 0 })
    return undefined
  }
  if ((await invalidPaths([job.drvPath])).length > 0) {
    const note = `dropped: the derivation ${job.drvPath} is no longer in the store (garbage-collected), so its outputs are unknown`
    queue.finish(job.seq, { state: 'done', note, pathsTotal: 0, pathsUploaded: 0, bytesUploaded: 0 })
    log(note)
    return undefined
  }
  return await outputsOf(job.drvPath)
}

function queueNote (job: Job, options: ServiceOptions): string {
  return options.queue.job(job.seq)?.note ?? 'nothing to push'
}

/** Every path `roots` reach through `byPath`'s references, roots included. */
function closureOf (roots: string[], byBase: ReadonlyMap<string, PathInfo>): Set<string> {
  const seen = new Set<string>()
  const stack = [...roots.map(r => baseName(r))]
  while (stack.length > 0) {
    const info = byBase.get(stack.pop() as string)
    if (info === undefined || seen.has(info.path)) continue
    seen.add(info.path)
    stack.push(...info.references)
  }
  return seen
}

async function pushJobs (live: Array<{ job: Job, outs: string[] }>, options: ServiceOptions): Promise<Map<number, JobOutcome>> {
  const { config, queue, log } = options
  const gone = new Set(await invalidPaths([...new Set(live.flatMap(l => l.outs))]))
  const notes = new Map<number, string[]>(live.map(({ job }) => [job.seq, []]))
  for (const { job, outs } of live) {
    for (const p of outs.filter(o => gone.has(o))) {
      const note = `dropped ${p}: no longer in the store (garbage-collected before upload)`
      notes.get(job.seq)?.push(note)
      queue.setPathOutcome(p, 'dropped', 'garbage-collected before upload', job.seq)
      log(note)
    }
  }
  const rootsOf = new Map(live.map(({ job, outs }) => [job.seq, outs.filter(p => !gone.has(p))]))
  const infos = await closureInfo([...new Set([...rootsOf.values()].flat())])
  const byBase = new Map(infos.map(i => [baseName(i.path), i]))
  const narSizes = new Map(infos.map(i => [i.path, i.narSize]))
  const all = await pushClosure(infos, {
    client: options.client,
    keys: options.keys,
    tmpDir: path.join(config.queueDir, 'tmp'),
    ...pushSettings(config),
    requestAttempts: 3,
    backoff: { baseMs: 250, maxMs: Math.min(5000, config.maxRetryDelaySeconds * 1000) },
    signal: options.signal
  })
  // One commit for the whole push's bookkeeping: a commit per job and per path was an fsync
  // each, 400 of them for a drain of 200 builds (BENCHMARKS.md, push). A kill -9 before it leaves
  // the jobs running, to be pushed again (and found present) at the next start.
  const outcomes = new Map<number, JobOutcome>()
  queue.inOneCommit(() => {
    for (const p of all.uploaded) queue.clearPathOutcome(p)
    const credited = new Set<string>()
    for (const { job } of live) {
      const roots = rootsOf.get(job.seq) ?? []
      const result = resultFor(all, closureOf(roots, byBase), narSizes, credited)
      for (const p of result.uploaded) credited.add(p)
      const jobNotes = notes.get(job.seq) ?? []
      for (const f of result.failed) {
        const dropped = f.kind === 'gone'
        queue.setPathOutcome(f.path, dropped ? 'dropped' : 'failed', f.reason, job.seq)
        if (dropped) jobNotes.push(`dropped ${f.path}: ${f.reason}`)
      }
      const realFailures = result.failed.filter(f => f.kind !== 'gone')
      const state = realFailures.length > 0 ? 'failed' : 'done'
      queue.finish(job.seq, {
        state,
        lastError: realFailures.length > 0 ? realFailures.map(f => `${f.path}: ${f.reason}`).join('\n') : null,
        note: jobNotes.length > 0 ? jobNotes.join('\n') : null,
        pathsTotal: result.closureSize,
        pathsUploaded: result.uploaded.length,
        bytesUploaded: result.bytesSent
      })
      const line = summarise(roots, result)
      log(line)
      for (const f of realFailures) log(`  failed ${f.path}: ${f.reason}`)
      outcomes.set(job.seq, { state, message: line })
    }
  })
  return outcomes
}

/** The next state of a job whose work threw. */
function failJob (job: Job, err: unknown, options: ServiceOptions): JobOutcome {
  const { config, queue, log } = options
  const message = err instanceof Error ? err.message : String(err)
  if (options.signal.aborted) {
    // Shutting down: leave the job for the next start, without counting an attempt.
    queue.retryLater(job.seq, 0, `interrupted: ${message}`)
    return { state: 'retry', message }
  }
  if (err instanceof NixCommandError && !(err instanceof TransientError)) {
    // The store changed under us (a path was collected between the checks): try again soon,
    // and the next attempt drops what is gone.
    const delay = backoffDelay(job.attempts, { baseMs: 1000, maxMs: 30_000 })
    queue.retryLater(job.seq, delay, message)
    log(`job ${job.jobId}: ${message}; retrying in ${(delay / 1000).toFixed(1)} s`)
    return { state: 'retry', message }
  }
  if (err instanceof RefusedError && err.status !== 401 && err.status !== 403) {
    queue.finish(job.seq, { state: 'failed', lastError: message, pathsTotal: 0, pathsUploaded: 0, bytesUploaded: 0 })
    log(`job ${job.jobId} failed: ${message}`)
    return { state: 'failed', message }
  }
  // Network trouble, 408/429/5xx, and 401/403 (a token problem an operator can fix without
  // losing builds): keep the job and try again later.
  const retryAfter = err instanceof TransientError ? err.retryAfterMs : undefined
  const delay = backoffDelay(job.attempts, backoffFor(config), retryAfter)
  queue.retryLater(job.seq, delay, message)
  log(`job ${job.jobId} (${job.drvPath === '' ? job.outPaths.join(' ') : path.basename(job.drvPath)}): ${message}; ` +
    `retry ${job.attempts + 1} in ${(delay / 1000).toFixed(1)} s`)
  return { state: 'retry', message }
}

/** Runs until `signal` aborts. */
export async function runPusher (options: ServiceOptions): Promise<void> {
  const { queue, config, log, signal } = options
  // NAR temp files of a pusher that was killed mid-upload; nothing else is ever in tmp/.
  rmSync(path.join(config.queueDir, 'tmp'), { recursive: true, force: true })
  const recovered = queue.recoverRunning()
  if (recovered > 0) log(`resuming ${recovered} job(s) that were in flight when the pusher last stopped`)
  while (!signal.aborted) {
    try {
      ingestSpool(queue, config.queueDir, log)
    } catch (err) {
      log(`cannot read the spool: ${(err as Error).message}`)
    }
    const jobs = queue.claimDue(JOBS_PER_PUSH)
    if (jobs.length > 0) {
      await processJobs(jobs, options)
      continue
    }
    const due = queue.earliestPendingAt()
    const wait = due === undefined ? config.pollMs : Math.max(10, Math.min(config.pollMs, due - Date.now()))
    await sleep(wait, signal)
  }
}
