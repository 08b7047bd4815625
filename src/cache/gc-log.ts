/** The fields logged for one garbage collection run, by the schedule and its worker thread. */
import type { GcReport } from './gc.js'

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
