/**
 * Pushes one runtime closure to the cache, uploading only what the server lacks:
 *
 *   1. skip paths signed by an upstream key (`skipSignedBy`, e.g. cache.nixos.org-1)
 *   2. ask which of the rest are missing: one batched round trip (POST /api/v1/missing-paths)
 *   3. NARs, largest first, `concurrency` at a time: dump → compress → temp file → upload
 *      (large ones by PUT, small ones gathered into multipart batches); uncompressed, a large NAR
 *      is PUT as it is read from the store
 *   4. narinfos in dependency order, signed with every configured key, so the server's rule
 *      "every reference already has a narinfo" holds at each step; a narinfo always follows its NAR
 *
 * A refused path (4xx) is reported with the server's reason, and the paths that reference it are
 * not sent (they would be refused for the missing reference). A transient failure that outlasts
 * the per-request retries aborts the push with a TransientError: the queue retries it later, and
 * the missing-paths query makes the retry skip whatever already went up.
 */
import { mkdirSync } from 'node:fs'
import { rm } from 'node:fs/promises'
import { signatureKeyName } from '../nix/signature.js'
import type { SecretKey } from '../signing/keys.js'
import type { BatchPartResult } from '../api/v1.js'
import { baseName, hashPartOf, invalidPaths, topologicalOrder, type PathInfo } from './closure.js'
import type { PushCompression, PusherConfig } from './config.js'
import { dumpCompressed, StoreNarBody, type NarFile, type NarSource } from './nar-file.js'
import { RefusedError, TransientError, withRetries, type BackoffOptions } from './retry.js'
import { buildNarinfo } from './signer.js'
import type { BatchPart, CacheClient } from './uploader.js'

export interface PushProgress {
  pathsDone: number
  pathsTotal: number
  /** Uncompressed NAR bytes handled so far / in total (what the user thinks of as size). */
  bytesDone: number
  bytesTotal: number
}

export interface PushOptions {
  client: CacheClient
  keys: readonly SecretKey[]
  tmpDir: string
  compression: PushCompression
  compressionLevel?: number | undefined
  concurrency: number
  skipSignedBy: readonly string[]
  /** NARs up to this many compressed bytes go into multipart batches; 0 disables batching. */
  batchNarBytes: number
  batchMaxBytes: number
  /** Attempts per request for transient failures, and their backoff. */
  requestAttempts: number
  backoff: BackoffOptions
  onProgress?: (p: PushProgress) => void
  signal?: AbortSignal
}

/** The part of PushOptions that comes straight from the pusher configuration. */
export function pushSettings (config: Readonly<PusherConfig>): Pick<PushOptions, 'compression' | 'compressionLevel' |
'concurrency' | 'skipSignedBy' | 'batchNarBytes' | 'batchMaxBytes'> {
  return {
    compression: config.compression,
    compressionLevel: config.compressionLevel,
    concurrency: config.concurrency,
    skipSignedBy: config.skipSignedBy,
    batchNarBytes: config.batchNarBytes,
    batchMaxBytes: config.batchMaxBytes
  }
}

/**
 * Why a path was not uploaded, decided from what happened, never from an error's text:
 *
 *   refused      the server said no (a 4xx, or a part of a batch refused), or a reference was
 *                not uploaded so the server would refuse it
 *   gone         no longer in the local store: Nix collected it after the closure was read
 *   corrupt      its NAR does not hash to what the local store recorded
 *
 * A server that cannot be reached (the network, 408, 429, 5xx past the retries) is no path's
 * failure: the push stops with a TransientError and the queue retries the whole job later.
 */
export type FailureKind = 'refused' | 'gone' | 'corrupt'

export interface PathFailure {
  path: string
  kind: FailureKind
  reason: string
}

export interface PushResult {
  closureSize: number
  alreadyPresent: number
  skippedUpstream: number
  uploaded: string[]
  /** Compressed bytes sent. */
  bytesSent: number
  /** Uncompressed NAR bytes of the uploaded paths. */
  narBytes: number
  failed: PathFailure[]
  elapsedMs: number
  /** Compressed bytes sent per uploaded path, and the paths skipped as upstream's (for resultFor). */
  sentBytes: Map<string, number>
  skipped: string[]
}

/**
 * The part of `result` that concerns `paths` (one job's closure, when several jobs went up in one
 * push): what was uploaded, failed or skipped among them, the rest counted as already present.
 * Paths in `creditedElsewhere` (uploaded for an earlier job of the same push) count as present,
 * so each upload is reported once, as when the jobs went up one after another.
 */
export function resultFor (result: PushResult, paths: ReadonlySet<string>, narSizes: ReadonlyMap<string, number>,
  creditedElsewhere: ReadonlySet<string> = new Set()): PushResult {
  const uploaded = result.uploaded.filter(p => paths.has(p) && !creditedElsewhere.has(p))
  const failed = result.failed.filter(f => paths.has(f.path))
  const skipped = result.skipped.filter(p => paths.has(p))
  return {
    closureSize: paths.size,
    alreadyPresent: paths.size - uploaded.length - failed.length - skipped.length,
    skippedUpstream: skipped.length,
    uploaded,
    bytesSent: uploaded.reduce((n, p) => n + (result.sentBytes.get(p) ?? 0), 0),
    narBytes: uploaded.reduce((n, p) => n + (narSizes.get(p) ?? 0), 0),
    failed,
    elapsedMs: result.elapsedMs,
    sentBytes: new Map(uploaded.map(p => [p, result.sentBytes.get(p) ?? 0])),
    skipped
  }
}

const NARINFOS_PER_BATCH = 200

/**
 * zstd NARs compressed at once (on the main thread, nar-file.ts); the other workers wait with theirs
 * while earlier NARs upload. One at a time, the largest NAR is ready (and its upload and the
 * server's verification under way) while the next is compressed, where four at once all finished
 * together at the end (BENCHMARKS.md, 2026-12-07).
 */
const DUMPS_AT_ONCE = 1

/** Compressed NARs held in memory for their upload, at most (the rest wait in temp files). */
const MEMORY_BYTES = 128 * 1024 * 1024

/** A counting semaphore. */
class Slots {
  private free: number
  private readonly waiting: Array<() => void> = []
  constructor (n: number) { this.free = n }
  async acquire (): Promise<void> {
    if (this.free > 0) { this.free--; return }
    await new Promise<void>(resolve => this.waiting.push(resolve))
  }

  release (): void {
    const wake = this.waiting.shift()
    if (wake !== undefined) wake()
    else this.free++
  }
}

type Retry = <T>(fn: () => Promise<T>) => Promise<T>
type Failures = Map<string, Omit<PathFailure, 'path'>>

export async function pushClosure (infos: PathInfo[], options: PushOptions): Promise<PushResult> {
  const started = Date.now()
  const retry: Retry = (fn) => withRetries(fn, options.requestAttempts, options.backoff, options.signal)
  const skipNames = new Set(options.skipSignedBy)
  const skipped = infos.filter(i => i.sigs.some(s => skipNames.has(signatureKeyName(s) ?? '')))
  const candidates = infos.filter(i => !skipped.includes(i))

  const missingHashes = new Set(await retry(() => options.client.missing(candidates.map(i => hashPartOf(i.path)))))
  const toUpload = candidates.filter(i => missingHashes.has(hashPartOf(i.path)))
    .sort((a, b) => b.narSize - a.narSize)

  const progress = new Progress(toUpload, options.onProgress)
  const failed: Failures = new Map()
  const narUploads = new NarUploads(toUpload, options, retry, failed, progress)
  await narUploads.run()
  const uploaded = await uploadNarinfos(topologicalOrder(toUpload), narUploads.nars, options, retry, failed, progress)

  return {
    closureSize: infos.length,
    alreadyPresent: candidates.length - toUpload.length,
    skippedUpstream: skipped.length,
    uploaded,
    bytesSent: narUploads.bytesSent,
    narBytes: toUpload.filter(i => uploaded.includes(i.path)).reduce((n, i) => n + i.narSize, 0),
    failed: [...failed].map(([path, failure]) => ({ path, ...failure })),
    elapsedMs: Date.now() - started,
    sentBytes: new Map(uploaded.map(p => [p, narUploads.nars.get(p)?.fileSize ?? 0])),
    skipped: skipped.map(i => i.path)
  }
}

/** The push's PushProgress, handed to `onProgress` as a copy on each report. */
class Progress {
  private readonly state: PushProgress

  constructor (toUpload: PathInfo[], private readonly onProgress: ((p: PushProgress) => void) | undefined) {
    this.state = { pathsDone: 0, pathsTotal: toUpload.length, bytesDone: 0, bytesTotal: toUpload.reduce((n, i) => n + i.narSize, 0) }
    this.report()
  }

  addBytes (narSize: number): void {
    this.state.bytesDone += narSize
  }

  pathDone (): void {
    this.state.pathsDone++
  }

  report (): void {
    this.onProgress?.({ ...this.state })
  }
}

/**
 * Step 3: the NARs, `concurrency` workers taking paths largest first. Each NAR is dumped and
 * compressed (DUMPS_AT_ONCE at a time for zstd, `concurrency` for xz), held in memory up to
 * MEMORY_BYTES or else in a temp file, checked against the store's NarHash/NarSize, then PUT on
 * its own or, when small, gathered into a multipart batch. A failure that is no path's own stops
 * every worker and is thrown; temp files are removed whatever happens.
 */
class NarUploads {
  /** The NARs the server holds now, by store path. */
  readonly nars = new Map<string, NarFile>()
  bytesSent = 0
  private readonly tempFiles = new Set<string>()
  /** Small NARs wait here until a batch is full. */
  private batch: Array<{ info: PathInfo, nar: NarFile }> = []
  private batchBytes = 0
  /** Compressed bytes waiting for their upload in memory, up to MEMORY_BYTES; beyond, in temp files. */
  private held = 0
  private next = 0
  private abort: unknown
  private readonly dumpSlots: Slots

  constructor (private readonly toUpload: PathInfo[], private readonly options: PushOptions,
    private readonly retry: Retry, private readonly failed: Failures, private readonly progress: Progress) {
    // xz compresses on one thread per NAR: those keep `concurrency` at once; uncompressed NARs are only read.
    this.dumpSlots = new Slots(options.compression === 'zstd' ? DUMPS_AT_ONCE : Math.max(1, options.concurrency))
  }

  async run (): Promise<void> {
    mkdirSync(this.options.tmpDir, { recursive: true })
    try {
      await Promise.all(Array.from({ length: Math.max(1, this.options.concurrency) }, async () => await this.worker()))
      if (this.abort === undefined) await this.flushBatch()
    } finally {
      await Promise.all([...this.tempFiles].map(f => rm(f, { force: true })))
    }
    if (this.abort !== undefined) throw this.abort
    if (this.options.signal?.aborted === true) throw new TransientError('push interrupted')
  }

  private async worker (): Promise<void> {
    while (this.abort === undefined && this.options.signal?.aborted !== true && this.next < this.toUpload.length) {
      const info = this.toUpload[this.next++] as PathInfo
      try {
        // Uncompressed, a NAR's size is its file's: a large one need not be made first.
        if (this.options.compression === 'none' && !this.batched(info.narSize)) {
          await this.putFromStore(info)
          continue
        }
        const nar = await this.verifiedNar(info)
        if (nar === undefined) continue
        if (this.batched(nar.fileSize)) {
          await this.addToBatch(info, nar)
          continue
        }
        await this.retry(() => this.options.client.putNar(nar.url, nar, nar.fileSize))
        await this.uploaded(info, nar)
      } catch (err) {
        await this.pathFailed(info, err)
      }
    }
  }

  private batched (fileSize: number): boolean {
    return this.options.batchNarBytes > 0 && fileSize <= this.options.batchNarBytes
  }

  /**
   * An uncompressed NAR PUT as it is read from the store (nar-file.ts StoreNarBody). When the
   * in-process read fails or its NAR differs from the record, `nix-store --dump` is asked, as
   * for every other NAR (verifiedNar).
   */
  private async putFromStore (info: PathInfo): Promise<void> {
    const body = new StoreNarBody(info.path, info.narHash, info.narSize)
    try {
      await this.retry(async () => {
        try {
          await this.options.client.putNar(body.nar.url, { stream: () => body.chunks() }, body.nar.fileSize)
        } catch (err) {
          // The store's side failed, not the server: not worth a retry of the same read.
          throw body.fault ?? err
        }
      })
    } catch (err) {
      if (err !== body.fault) throw err
      const nar = await this.verifiedNar(info, 'nix-store')
      if (nar === undefined) return
      await this.retry(() => this.options.client.putNar(nar.url, nar, nar.fileSize))
      await this.uploaded(info, nar)
      return
    }
    await this.uploaded(info, body.nar)
  }

  /**
   * The path's NAR, or undefined (and the path failed as corrupt) when it does not match the
   * store's record. From the in-process writer, falling back on `nix-store --dump`; or from
   * `nix-store --dump` alone.
   */
  private async verifiedNar (info: PathInfo, source: NarSource = 'in-process'): Promise<NarFile | undefined> {
    const { tmpDir, compression, compressionLevel } = this.options
    await this.dumpSlots.acquire()
    let nar: NarFile
    try {
      nar = await dumpCompressed(info.path, tmpDir, compression, compressionLevel, source, MEMORY_BYTES - this.held)
        .catch(async (err: unknown) => {
          if (source === 'nix-store') throw err
          return await dumpCompressed(info.path, tmpDir, compression, compressionLevel, 'nix-store')
        })
      this.keep(nar)
      if (!matches(nar, info) && source === 'in-process') {
        // Ask Nix itself before calling the store corrupt.
        await this.discard(nar)
        nar = await dumpCompressed(info.path, tmpDir, compression, compressionLevel, 'nix-store')
        this.keep(nar)
      }
    } finally {
      this.dumpSlots.release()
    }
    if (matches(nar, info)) return nar
    this.failed.set(info.path, {
      kind: 'corrupt',
      reason: `the store path's NAR (${nar.narSize} bytes) does not match its recorded NarHash/NarSize; ` +
        'the local store may be corrupt (nix-store --verify --check-contents)'
    })
    await this.discard(nar)
    return undefined
  }

  private async addToBatch (info: PathInfo, nar: NarFile): Promise<void> {
    this.batch.push({ info, nar })
    this.batchBytes += nar.fileSize
    // Sent once full, or once nothing is left to dump (it cannot grow, and the larger NARs
    // other workers are still compressing would hold it back for nothing).
    if (this.batchBytes >= this.options.batchMaxBytes || this.batch.length >= 500 || this.next >= this.toUpload.length) await this.flushBatch()
  }

  private async flushBatch (): Promise<void> {
    if (this.batch.length === 0) return
    const items = this.batch
    this.batch = []
    this.batchBytes = 0
    const sizes = new Map(items.map(({ nar }) => [nar.url, nar.fileSize]))
    const results = await this.retry(() => this.options.client.uploadBatch(items.map(({ nar }) => ({ name: nar.url, file: nar.file, chunks: nar.chunks })), sizes))
    for (const { info, nar } of items) {
      const result = results.find(r => r.name === nar.url)
      if (result === undefined || result.status >= 300) {
        this.failed.set(info.path, { kind: 'refused', reason: partReason(result, nar.url) })
        await this.discard(nar)
      } else {
        await this.uploaded(info, nar)
      }
    }
  }

  private async uploaded (info: PathInfo, nar: NarFile): Promise<void> {
    this.nars.set(info.path, nar)
    this.bytesSent += nar.fileSize
    this.progress.addBytes(info.narSize)
    await this.discard(nar)
    this.progress.report()
  }

  /** A refusal or a collected path fails that path; anything else stops the push. */
  private async pathFailed (info: PathInfo, err: unknown): Promise<void> {
    if (err instanceof RefusedError) {
      this.failed.set(info.path, { kind: 'refused', reason: err.message })
    } else if (!(err instanceof TransientError) && await isGone(info.path)) {
      this.failed.set(info.path, { kind: 'gone', reason: `no longer in the local store (garbage-collected before upload): ${(err as Error).message}` })
    } else {
      this.abort ??= err
    }
  }

  private keep (nar: NarFile): void {
    if (nar.file !== undefined) this.tempFiles.add(nar.file)
    else this.held += nar.fileSize
  }

  private async discard (nar: NarFile): Promise<void> {
    if (nar.file !== undefined) {
      this.tempFiles.delete(nar.file)
      await rm(nar.file, { force: true })
    } else if (nar.chunks !== undefined) {
      this.held -= nar.fileSize
      delete nar.chunks
    }
  }
}

function matches (nar: NarFile, info: PathInfo): boolean {
  return nar.narHash.equals(info.narHash) && nar.narSize === info.narSize
}

/**
 * Step 4: narinfos, references first, NARINFOS_PER_BATCH to a request. A path whose NAR or a
 * reference failed is not sent (the server would refuse it). Returns the paths uploaded.
 */
async function uploadNarinfos (ordered: PathInfo[], nars: ReadonlyMap<string, NarFile>, options: PushOptions, retry: Retry,
  failed: Failures, progress: Progress): Promise<string[]> {
  const uploaded: string[] = []
  const pending: Array<{ info: PathInfo, part: BatchPart }> = []
  for (const info of ordered) {
    const nar = nars.get(info.path)
    if (nar === undefined) {
      if (!failed.has(info.path)) failed.set(info.path, { kind: 'refused', reason: 'its NAR was not uploaded' })
      continue
    }
    const blocked = info.references.find(ref => ref !== baseName(info.path) && [...failed.keys()].some(f => baseName(f) === ref))
    if (blocked !== undefined) {
      failed.set(info.path, { kind: 'refused', reason: `not uploaded: its reference ${blocked} failed` })
      continue
    }
    pending.push({ info, part: { name: `${hashPartOf(info.path)}.narinfo`, text: buildNarinfo(info, nar, options.keys) } })
  }
  for (let i = 0; i < pending.length; i += NARINFOS_PER_BATCH) {
    const chunk = pending.slice(i, i + NARINFOS_PER_BATCH)
    const results = await retry(() => options.client.uploadBatch(chunk.map(c => c.part), new Map()))
    for (const { info, part } of chunk) {
      const result = results.find(r => r.name === part.name)
      if (result === undefined || result.status >= 300) {
        failed.set(info.path, { kind: 'refused', reason: partReason(result, part.name) })
      } else {
        uploaded.push(info.path)
        progress.pathDone()
      }
    }
    progress.report()
  }
  return uploaded
}

function partReason (result: BatchPartResult | undefined, name: string): string {
  if (result === undefined) return `${name}: the server did not answer for this part`
  const detail = result.code !== undefined ? `${result.code}: ${result.message ?? ''}` : result.message ?? ''
  return `${name}: HTTP ${result.status}${detail === '' ? '' : `: ${detail.trim()}`}`
}

/**
 * Whether a path whose NAR could not be written is no longer valid in the local store, asked of
 * Nix itself. When Nix cannot be asked either, the push stops with the first error.
 */
async function isGone (storePath: string): Promise<boolean> {
  try {
    return (await invalidPaths([storePath])).includes(storePath)
  } catch {
    return false
  }
}
