/**
 * The long-running pusher: drains the spool into the queue and the queue into the cache.
 *
 *   loop: spool/*.job ──▶ queue (SQLite) ──▶ claim the oldest due job ──▶ resolve outputs
 *         (OUT_PATHS, or the derivation's outputs) ──▶ drop collected paths ──▶ closure ──▶ push
 *
 * One job at a time (a job's NARs go up `concurrency` at a time). Transient failures put the job
 * back with exponential backoff; refusals finish it as failed with the server's reason; paths
 * Nix collected before the upload are dropped with a note. Stopping (SIGTERM) lets the current
 * request fail fast and leaves the job to be resumed on the next start.
 */
import { rmSync } from 'node:fs'
import path from 'node:path'
import type { SecretKey } from '../signing/keys.js'
import { closureInfo, invalidPaths, NixCommandError, outputsOf } from './closure.js'
import type { PusherConfig } from './config.js'
import { pushClosure, pushSettings, type PushResult } from './push-closure.js'
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
  const { config, queue, log } = options
  const notes: string[] = []
  try {
    let outs = job.outPaths
    if (outs.length === 0) {
      if (job.drvPath === '') {
        queue.finish(job.seq, { state: 'done', note: 'nothing recorded to push', pathsTotal: 0, pathsUploaded: 0, bytesUploaded: 0 })
        return { state: 'done', message: 'nothing to push' }
      }
      if ((await invalidPaths([job.drvPath])).length > 0) {
        const note = `dropped: the derivation ${job.drvPath} is no longer in the store (garbage-collected), so its outputs are unknown`
        queue.finish(job.seq, { state: 'done', note, pathsTotal: 0, pathsUploaded: 0, bytesUploaded: 0 })
        log(note)
        return { state: 'done', message: note }
      }
      outs = await outputsOf(job.drvPath)
    }
    const gone = new Set(await invalidPaths(outs))
    for (const p of gone) {
      const note = `dropped ${p}: no longer in the store (garbage-collected before upload)`
      notes.push(note)
      queue.setPathOutcome(p, 'dropped', 'garbage-collected before upload', job.seq)
      log(note)
    }
    const roots = outs.filter(p => !gone.has(p))
    const infos = await closureInfo(roots)
    const result = await pushClosure(infos, {
      client: options.client,
      keys: options.keys,
      tmpDir: path.join(config.queueDir, 'tmp'),
      ...pushSettings(config),
      requestAttempts: 3,
      backoff: { baseMs: 250, maxMs: Math.min(5000, config.maxRetryDelaySeconds * 1000) },
      signal: options.signal
    })
    for (const p of result.uploaded) queue.clearPathOutcome(p)
    for (const f of result.failed) {
      const dropped = f.reason.includes('garbage-collected')
      queue.setPathOutcome(f.path, dropped ? 'dropped' : 'failed', f.reason, job.seq)
      if (dropped) notes.push(`dropped ${f.path}: ${f.reason}`)
    }
    const realFailures = result.failed.filter(f => !f.reason.includes('garbage-collected'))
    const state = realFailures.length > 0 ? 'failed' : 'done'
    queue.finish(job.seq, {
      state,
      lastError: realFailures.length > 0 ? realFailures.map(f => `${f.path}: ${f.reason}`).join('\n') : null,
      note: notes.length > 0 ? notes.join('\n') : null,
      pathsTotal: result.closureSize,
      pathsUploaded: result.uploaded.length,
      bytesUploaded: result.bytesSent
    })
    const line = summarise(roots, result)
    log(line)
    for (const f of realFailures) log(`  failed ${f.path}: ${f.reason}`)
    return { state, message: line }
  } catch (err) {
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
    const job = queue.claimNext()
    if (job !== undefined) {
      await processJob(job, options)
      continue
    }
    const due = queue.earliestPendingAt()
    const wait = due === undefined ? config.pollMs : Math.max(10, Math.min(config.pollMs, due - Date.now()))
    await sleep(wait, signal)
  }
}
