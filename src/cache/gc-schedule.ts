/**
 * The server's garbage collection schedule: a run every `gc.interval`, with the policy from the
 * configuration, logged at info. The first run comes one interval after the start.
 *
 * Exactly one process per data folder should run the schedule. Runs in two processes would not
 * corrupt anything (each batch is a write transaction that re-checks its plan) but would do the
 * work twice. With several server processes (node:cluster workers), call startGcSchedule in the
 * primary only, with its own database connection: the workers then never pause for planning.
 */
import type { GcSettings } from '../config/config.js'
import { collectGarbage, type GcCache, type GcReport } from './gc.js'

export interface GcLog {
  info: (fields: object, message: string) => void
  error: (fields: object, message: string) => void
}

/** The fields of the log line for one run. */
export function gcLogFields (report: GcReport): Record<string, unknown> {
  return {
    storePaths: report.storePaths.length,
    narFiles: report.narFiles.length,
    unnamedNarFiles: report.unnamedNarFiles.length,
    bytes: report.bytes,
    remainingBytes: report.remainingBytes,
    kept: report.kept,
    expiredPins: report.expiredPins,
    maxSizeReached: report.maxSizeReached,
    ms: report.finishedAt - report.startedAt
  }
}

/** Starts the schedule (nothing when gc.interval is off); the returned function stops it and waits for a run in progress. */
export function startGcSchedule (cache: GcCache, settings: Readonly<GcSettings>, log: GcLog): () => Promise<void> {
  const interval = settings.interval
  if (interval === null) return async () => {}
  let stopping = false
  let running: Promise<void> | undefined
  let timer: NodeJS.Timeout | undefined

  const runOnce = async (): Promise<void> => {
    try {
      const report = await collectGarbage(cache, { ...settings, trigger: 'schedule', shouldStop: () => stopping })
      log.info(gcLogFields(report), 'gc run')
    } catch (err) {
      log.error({ err }, 'gc run failed')
    }
  }
  const schedule = (): void => {
    timer = setTimeout(() => {
      running = runOnce().finally(() => {
        running = undefined
        if (!stopping) schedule()
      })
    }, interval)
    timer.unref()
  }
  schedule()

  return async () => {
    stopping = true
    clearTimeout(timer)
    await running
  }
}
