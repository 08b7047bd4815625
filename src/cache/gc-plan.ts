/**
 * Which paths a collection evicts, decided in memory from a snapshot of the cache. Pure: the
 * snapshot comes from src/db/retention.ts, the removal is done by src/cache/gc.ts.
 *
 * Removing a path removes everything that references it (cache/remove-paths.ts), so evicting by
 * each path's own last use would be wrong both ways: an old dependency of a path used today would
 * be evicted and take today's path with it. Instead every path gets an effective last use: the
 * latest use of the path or of anything that references it, transitively.
 *
 *   glibc (own: 90 days ago) ◀── hello (own: 60 days ago) ◀── my-app (own: today)
 *   effective:  today                  today                      today
 *
 * A reference's effective last use is never earlier than its referrers', so taking paths in
 * order of effective last use reaches every referrer of a path before (or together with) the
 * path itself: an eviction never drags along a path that was used later than the one evicted.
 * A pinned path counts as used at infinity, which keeps its whole closure. The few paths the
 * ordering cannot reach (a reference cycle, which Nix does not produce) are kept.
 *
 * Over the size cap, paths that can be fetched again go first (least recently used first among
 * them): pulled from an upstream that is still configured, and only referenced by such paths, so
 * evicting one takes along nothing that was pushed. Only then the rest, by the same order.
 */
import type { GcSnapshot } from '../db/metadata-store.js'

export interface GcPolicy {
  /** Evict least recently used paths until NAR files take at most this many bytes. */
  maxSize: number | null
  /** Evict paths whose effective last use is older than this many ms. */
  olderThan: number | null
  /** maxSize never evicts a path whose effective last use is more recent than this many ms. */
  keepRecent: number
  /** URLs of the configured upstreams: maxSize evicts paths pulled from these first. */
  upstreams?: readonly string[]
}

export interface PlannedEviction {
  id: number
  hashPart: string
  /** Own last use when the snapshot was taken; a later one means the path was used meanwhile. */
  lastUse: number
  effectiveLastUse: number
}

export interface GcPlan {
  /** Least recently used first; every referrer of a path comes before it. */
  evict: PlannedEviction[]
  /** NAR files no remaining narinfo would name, and their total size. */
  narFileIds: number[]
  bytes: number
  /** NAR file bytes before and after the evictions. */
  totalBytes: number
  remainingBytes: number
}

/** Effective last use of each path (by index in snapshot.paths); Infinity for pinned closures. */
export function effectiveLastUse (snapshot: GcSnapshot): { effective: number[], referrers: number[][] } {
  const index = new Map(snapshot.paths.map((p, i) => [p.id, i]))
  const referrers: number[][] = snapshot.paths.map(() => [])
  const references: number[][] = snapshot.paths.map(() => [])
  for (const edge of snapshot.edges) {
    const from = index.get(edge.referrer)
    const to = index.get(edge.reference)
    if (from === undefined || to === undefined) continue
    referrers[to]?.push(from)
    references[from]?.push(to)
  }
  const effective = snapshot.paths.map(p => p.pinned !== 0 ? Infinity : p.lastUse)
  // Kahn's algorithm from the paths nothing references down to their references: a path is
  // settled once all its referrers are, and passes its effective last use down to its references.
  const waitingFor = referrers.map(r => r.length)
  const ready = waitingFor.flatMap((n, i) => n === 0 ? [i] : [])
  let settled = 0
  while (ready.length > 0) {
    const i = ready.pop() as number
    settled++
    for (const j of references[i] ?? []) {
      effective[j] = Math.max(effective[j] ?? 0, effective[i] ?? 0)
      waitingFor[j] = (waitingFor[j] ?? 0) - 1
      if (waitingFor[j] === 0) ready.push(j)
    }
  }
  if (settled < snapshot.paths.length) {
    waitingFor.forEach((n, i) => { if (n > 0) effective[i] = Infinity })
  }
  return { effective, referrers }
}

/**
 * Which paths (by index in snapshot.paths) can be evicted without taking along anything that
 * cannot be fetched again: pulled from one of `upstreams`, and so is every referrer, transitively.
 */
export function refetchable (snapshot: GcSnapshot, referrers: number[][], upstreams: ReadonlySet<string>): boolean[] {
  const result: Array<boolean | undefined> = snapshot.paths.map(() => undefined)
  const visiting = new Set<number>()
  const check = (i: number): boolean => {
    const known = result[i]
    if (known !== undefined) return known
    // A cycle (Nix makes none) is not decided here: kept out of the preference.
    if (visiting.has(i)) return false
    visiting.add(i)
    const from = snapshot.paths[i]?.upstream
    const ok = from !== null && from !== undefined && upstreams.has(from) && (referrers[i] ?? []).every(check)
    visiting.delete(i)
    result[i] = ok
    return ok
  }
  return snapshot.paths.map((_, i) => check(i))
}

export function planGc (snapshot: GcSnapshot, policy: GcPolicy, now: number): GcPlan {
  const { effective, referrers } = effectiveLastUse(snapshot)
  const sizes = new Map(snapshot.narFiles.map(f => [f.id, f.fileSize]))
  const totalBytes = snapshot.narFiles.reduce((sum, f) => sum + f.fileSize, 0)
  const namedBy = new Map<number, number>()
  for (const p of snapshot.paths) namedBy.set(p.narFileId, (namedBy.get(p.narFileId) ?? 0) + 1)

  const oldCutoff = policy.olderThan === null ? -Infinity : now - policy.olderThan
  const recentCutoff = now - policy.keepRecent
  // Least recently used first; among equals, the later upload first: a referrer is always
  // uploaded after its references, so it goes before them.
  const order = snapshot.paths.map((_, i) => i).filter(i => Number.isFinite(effective[i]))
    .sort((a, b) => (effective[a] ?? 0) - (effective[b] ?? 0) || (snapshot.paths[b]?.id ?? 0) - (snapshot.paths[a]?.id ?? 0))

  const doomed = new Set<number>()
  const evict: PlannedEviction[] = []
  const narFileIds: number[] = []
  let bytes = 0
  const doom = (i: number): void => {
    const path = snapshot.paths[i]
    if (path === undefined || doomed.has(i)) return
    doomed.add(i)
    evict.push({ id: path.id, hashPart: path.hashPart, lastUse: path.lastUse, effectiveLastUse: effective[i] ?? 0 })
    const left = (namedBy.get(path.narFileId) ?? 0) - 1
    namedBy.set(path.narFileId, left)
    if (left === 0) {
      narFileIds.push(path.narFileId)
      bytes += sizes.get(path.narFileId) ?? 0
    }
  }
  /** Dooms path i after everything that references it, as removing it would remove them. */
  const doomWithReferrers = (i: number): void => {
    if (doomed.has(i)) return
    for (const r of referrers[i] ?? []) doomWithReferrers(r)
    doom(i)
  }

  const overSize = (): boolean => policy.maxSize !== null && totalBytes - bytes > policy.maxSize
  if (overSize() && policy.upstreams !== undefined && policy.upstreams.length > 0) {
    const again = refetchable(snapshot, referrers, new Set(policy.upstreams))
    for (const i of order) {
      if (!overSize() || (effective[i] ?? 0) >= recentCutoff) break
      if (again[i] === true) doomWithReferrers(i)
    }
  }
  for (const i of order) {
    const used = effective[i] ?? 0
    const tooOld = used < oldCutoff
    if (!tooOld && !(overSize() && used < recentCutoff)) break
    doomWithReferrers(i)
  }
  return { evict, narFileIds, bytes, totalBytes, remainingBytes: totalBytes - bytes }
}
