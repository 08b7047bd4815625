/**
 * The server's garbage collection schedule: a run every `gc.interval` with the policy from the
 * configuration, each in a worker thread (cache/gc-worker.ts) so the server keeps answering
 * while it plans, and each logged at info. The first run comes one interval after the start.
 *
 * Exactly one process per data folder should run the schedule. Two would not corrupt anything
 * (every batch is a write transaction that re-checks its plan) but would do the work twice. With
 * several server processes (node:cluster workers), call startGcSchedule in the primary only.
 */
import { Worker } from 'node:worker_threads'
import type { GcSettings } from '../config/config.js'
import type { GcWorkerInput, GcWorkerResult } from './gc-worker.js'
import type { CacheLocation } from './open-cache.js'

export interface GcLog {
  info: (fields: object, message: string) => void
  error: (fields: object, message: string) => void
}

/** Runs one collection in a worker thread; `stop` asks it to end after the current batch. */
function runInWorker (input: GcWorkerInput): { done: Promise<GcWorkerResult>, stop: () => void } {
  const worker = new Worker(new URL('./gc-worker.js', import.meta.url), { workerData: input })
  const done = new Promise<GcWorkerResult>((resolve) => {
    let result: GcWorkerResult | undefined
    worker.on('message', (message: GcWorkerResult) => { result = message })
    worker.on('error', (err) => { result = { ok: false, error: err.stack ?? err.message } })
    worker.on('exit', (code) => { resolve(result ?? { ok: false, error: `gc worker exited with code ${code} before reporting` }) })
  })
  return { done, stop: () => worker.postMessage('stop') }
}

/**
 * Starts the schedule (nothing when gc.interval is off); the returned function stops it and waits
 * for a run in progress. `upstreams`: the configured upstreams' URLs (paths pulled from them are
 * evicted first over the size cap, cache/gc-plan.ts).
 */
export function startGcSchedule (location: CacheLocation, settings: Readonly<GcSettings>, log: GcLog, upstreams: readonly string[] = []): () => Promise<void> {
  const interval = settings.interval
  if (interval === null) return async () => {}
  let stopping = false
  let current: { done: Promise<GcWorkerResult>, stop: () => void } | undefined
  let timer: NodeJS.Timeout | undefined

  const runOnce = async (): Promise<void> => {
    // Plain data only: the worker thread gets a copy.
    const where = { dataDir: location.dataDir, database: location.database ?? null, storage: { url: location.storage?.url ?? null } }
    current = runInWorker({ location: where, settings: { ...settings }, upstreams: [...upstreams] })
    const result = await current.done
    current = undefined
    if (result.ok) log.info(result.fields, 'gc run')
    else log.error({ err: result.error }, 'gc run failed')
  }
  const schedule = (): void => {
    timer = setTimeout(() => {
      runOnce().finally(() => { if (!stopping) schedule() })
    }, interval)
  }
  schedule()

  return async () => {
    stopping = true
    clearTimeout(timer)
    if (current !== undefined) {
      current.stop()
      await current.done
    }
  }
}
