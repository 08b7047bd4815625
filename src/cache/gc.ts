/**
 * Garbage collection: one run of `narwhal gc`, or of the server's schedule (cache/gc-schedule.ts).
 *
 *   1. pins past their keep-until are deleted;
 *   2. NAR files no narinfo names are removed once older than the grace period;
 *   3. the eviction plan is made from a snapshot (cache/gc-plan.ts): least recently used first,
 *      by effective last use, so a dependency of a recently used or pinned path is never a
 *      candidate;
 *   4. the plan is carried out in batches, each one write transaction (cache/remove-paths.ts,
 *      the removal shared with fsck), so readers and uploads wait for a batch, never for a run.
 *
 * The cache keeps serving while a run goes on, maybe in another process, so each batch checks,
 * inside its transaction (the store asks `stillWanted` below), that what it removes is still what
 * was planned: a path that was used or pinned since the snapshot, or that gained a referrer not
 * in the plan, is kept (counted as `kept`). A dry run reports the plan and changes nothing.
 */
import type { ClosureRow, MetadataStore, NarFileRow } from '../db/metadata-store.js'
import type { BlobStore } from '../storage/blob-store.js'
import { planGc, type GcPolicy, type PlannedEviction } from './gc-plan.js'
import { removeNarinfos, removeUnnamedNarFiles } from './remove-paths.js'

export interface GcCache {
  metadata: MetadataStore
  blobs: BlobStore
}

export interface GcOptions extends GcPolicy {
  /** NAR files no narinfo names are removed once older than this many ms. */
  unnamedNarGrace: number
  dryRun?: boolean
  trigger: 'cli' | 'schedule'
  /** Paths removed per write transaction. */
  batchSize?: number
  now?: number
  /** Asked between batches; true ends the run early (the server is shutting down). */
  shouldStop?: () => boolean | Promise<boolean>
}

export interface GcReport {
  dryRun: boolean
  expiredPins: number
  /** Store paths whose narinfos were (or would be) removed. */
  storePaths: string[]
  /** NAR files removed because the evicted narinfos were the last to name them. */
  narFiles: NarFileRow[]
  /** NAR files removed because no narinfo named them for longer than the grace period. */
  unnamedNarFiles: NarFileRow[]
  /** Size of all removed NAR files. */
  bytes: number
  /** NAR file bytes before and after the run. */
  totalBytes: number
  remainingBytes: number
  /** Planned evictions left in place because the path was used, pinned or referenced meanwhile. */
  kept: number
  /** Whether NAR files now take at most maxSize; null without maxSize. */
  maxSizeReached: boolean | null
  startedAt: number
  finishedAt: number
}

const yieldToEventLoop = async (): Promise<void> => { await new Promise(resolve => setImmediate(resolve)) }

/**
 * True when removing `eviction` now removes exactly planned paths, none of them pinned and none
 * used since the snapshot. Asked by the store inside the batch's removal.
 */
function stillAsPlanned (closure: ClosureRow[], planned: Map<number, PlannedEviction>): boolean {
  return closure.every(row => {
    const plan = planned.get(row.id)
    return plan !== undefined && row.pinned === 0 && row.lastUse <= plan.lastUse
  })
}

export async function collectGarbage (cache: GcCache, options: GcOptions): Promise<GcReport> {
  const { metadata } = cache
  const retention = metadata.retention
  const dryRun = options.dryRun ?? false
  const startedAt = options.now ?? Date.now()
  const expiredPins = dryRun ? 0 : await retention.deleteExpiredPins(startedAt)
  const unnamed = await removeUnnamedNarFiles(cache, startedAt - options.unnamedNarGrace, { dryRun, now: startedAt })

  const snapshot = await retention.snapshot(startedAt)
  if (dryRun) {
    const gone = new Set(unnamed.narFiles.map(f => f.id))
    snapshot.narFiles = snapshot.narFiles.filter(f => !gone.has(f.id))
  }
  const plan = planGc(snapshot, options, startedAt)

  let storePaths: string[]
  const narFiles: NarFileRow[] = []
  let kept = 0
  if (dryRun) {
    const paths = await retention.storePathsOf(plan.evict.map(e => e.id))
    storePaths = plan.evict.map(e => paths.get(e.id) ?? e.hashPart)
    for (const id of plan.narFileIds) {
      const row = await metadata.narFiles.getById(id)
      if (row !== undefined) narFiles.push(row)
    }
  } else {
    storePaths = []
    const planned = new Map(plan.evict.map(e => [e.id, e]))
    const batchSize = options.batchSize ?? 100
    for (let start = 0; start < plan.evict.length; start += batchSize) {
      if (await options.shouldStop?.() === true) break
      const batch = new Map(plan.evict.slice(start, start + batchSize).map(e => [e.hashPart, e]))
      const removal = await removeNarinfos(cache, [...batch.keys()], {
        now: Date.now(),
        // A path kept is no longer planned, so its references (which removing would take it
        // along with) fail the check in turn and stay too.
        stillWanted: (hashPart, closure) => {
          const eviction = batch.get(hashPart)
          const go = eviction !== undefined && planned.has(eviction.id) && stillAsPlanned(closure, planned)
          if (!go && eviction !== undefined) planned.delete(eviction.id)
          return go
        }
      })
      kept += removal.kept.length
      storePaths.push(...removal.storePaths)
      narFiles.push(...removal.narFiles)
      await yieldToEventLoop()
    }
  }

  const bytes = unnamed.bytes + narFiles.reduce((sum, f) => sum + f.fileSize, 0)
  const remainingBytes = dryRun ? plan.remainingBytes : await retention.totalNarBytes()
  const report: GcReport = {
    dryRun,
    expiredPins,
    storePaths,
    narFiles,
    unnamedNarFiles: unnamed.narFiles,
    bytes,
    totalBytes: plan.totalBytes + unnamed.bytes,
    remainingBytes,
    kept,
    maxSizeReached: options.maxSize === null ? null : remainingBytes <= options.maxSize,
    startedAt,
    finishedAt: Date.now()
  }
  if (!dryRun) {
    await retention.recordGcRun({
      startedAt,
      finishedAt: report.finishedAt,
      trigger: options.trigger,
      storePaths: storePaths.length,
      narFiles: narFiles.length + unnamed.narFiles.length,
      bytes,
      remainingBytes
    })
  }
  return report
}

/** The fields logged for one run (by the server's schedule). */
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
