/**
 * One scheduled collection, run in a worker thread (started by cache/gc-schedule.ts) on its own
 * database connection. Planning reads every narinfo and reference, which for a large cache takes
 * long enough to stall a server's event loop; in a thread it stalls nothing, and the server's
 * requests wait at most for one batch's write transaction.
 *
 * The parent posts "stop" to end the run between batches; the thread is never terminated
 * mid-run, which could cut a batch between unlinking its files and committing.
 */
import { parentPort, workerData } from 'node:worker_threads'
import type { GcSettings } from '../config/config.js'
import { collectGarbage, gcLogFields } from './gc.js'
import { openDataDir, type CacheLocation } from './open-cache.js'
import { runSingleWriter } from './single-writer.js'

export interface GcWorkerInput { location: CacheLocation, settings: GcSettings, upstreams: string[] }
export type GcWorkerResult = { ok: true, fields: Record<string, unknown> } | { ok: false, error: string }

const { location, settings, upstreams } = workerData as GcWorkerInput
let stopping = false
parentPort?.on('message', (message: unknown) => { if (message === 'stop') stopping = true })

let result: GcWorkerResult
try {
  // The same database and storage as the server's: a bucket's NARs are collected in the bucket.
  const cache = await openDataDir(location)
  try {
    const run = await runSingleWriter(cache.metadata, 'gc', async (lost) =>
      await collectGarbage(cache, { ...settings, upstreams, trigger: 'schedule', shouldStop: () => stopping || lost.aborted }))
    result = run.kind === 'ran' ? { ok: true, fields: gcLogFields(run.value) } : { ok: true, fields: { skipped: 'another replica is collecting, or an export into this database is running' } }
  } finally {
    await cache.close()
  }
} catch (err) {
  result = { ok: false, error: err instanceof Error ? err.stack ?? err.message : String(err) }
}
parentPort?.postMessage(result)
parentPort?.close()
