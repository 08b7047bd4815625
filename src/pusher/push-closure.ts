/**
 * Pushes one runtime closure to the cache, uploading only what the server lacks:
 *
 *   1. skip paths signed by an upstream key (`skipSignedBy`, e.g. cache.nixos.org-1)
 *   2. ask which of the rest are missing: one batched round trip (POST /api/v1/missing-paths)
 *   3. NARs, largest first, `concurrency` at a time: dump → compress → temp file → upload
 *      (large ones by PUT, small ones gathered into multipart batches)
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
import { baseName, hashPartOf, topologicalOrder, type PathInfo } from './closure.js'
import type { PushCompression, PusherConfig } from './config.js'
import { dumpCompressed, type NarFile } from './nar-file.js'
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

export interface PushResult {
  closureSize: number
  alreadyPresent: number
  skippedUpstream: number
  uploaded: string[]
  /** Compressed bytes sent. */
  bytesSent: number
  /** Uncompressed NAR bytes of the uploaded paths. */
  narBytes: number
  failed: Array<{ path: string, reason: string }>
  elapsedMs: number
}

const NARINFOS_PER_BATCH = 200

export async function pushClosure (infos: PathInfo[], options: PushOptions): Promise<PushResult> {
  const started = Date.now()
  const { client } = options
  const retry = <T>(fn: () => Promise<T>): Promise<T> => withRetries(fn, options.requestAttempts, options.backoff, options.signal)
  const skipNames = new Set(options.skipSignedBy)
  const skipped = infos.filter(i => i.sigs.some(s => skipNames.has(signatureKeyName(s) ?? '')))
  const candidates = infos.filter(i => !skipped.includes(i))

  const missingHashes = new Set(await retry(() => client.missing(candidates.map(i => hashPartOf(i.path)))))
  const toUpload = candidates.filter(i => missingHashes.has(hashPartOf(i.path)))
    .sort((a, b) => b.narSize - a.narSize)

  const progress: PushProgress = {
    pathsDone: 0,
    pathsTotal: toUpload.length,
    bytesDone: 0,
    bytesTotal: toUpload.reduce((n, i) => n + i.narSize, 0)
  }
  const report = (): void => options.onProgress?.({ ...progress })
  report()

  const failed = new Map<string, string>()
  const nars = new Map<string, NarFile>()
  const tempFiles = new Set<string>()
  let bytesSent = 0
  mkdirSync(options.tmpDir, { recursive: true })

  // Small NARs wait here until a batch is full.
  let batch: Array<{ info: PathInfo, nar: NarFile }> = []
  let batchBytes = 0
  const narDone = async (info: PathInfo, nar: NarFile): Promise<void> => {
    nars.set(info.path, nar)
    bytesSent += nar.fileSize
    progress.bytesDone += info.narSize
    tempFiles.delete(nar.file)
    await rm(nar.file, { force: true })
    report()
  }
  const flushBatch = async (): Promise<void> => {
    if (batch.length === 0) return
    const items = batch
    batch = []
    batchBytes = 0
    const sizes = new Map(items.map(({ nar }) => [nar.url, nar.fileSize]))
    const results = await retry(() => client.uploadBatch(items.map(({ nar }) => ({ name: nar.url, file: nar.file })), sizes))
    for (const { info, nar } of items) {
      const result = results.find(r => r.name === nar.url)
      if (result === undefined || result.status >= 300) {
        failed.set(info.path, partReason(result, nar.url))
        tempFiles.delete(nar.file)
        await rm(nar.file, { force: true })
      } else {
        await narDone(info, nar)
      }
    }
  }

  let next = 0
  let abort: unknown
  const worker = async (): Promise<void> => {
    while (abort === undefined && options.signal?.aborted !== true && next < toUpload.length) {
      const info = toUpload[next++] as PathInfo
      try {
        let nar = await dumpCompressed(info.path, options.tmpDir, options.compression, options.compressionLevel)
          .catch(async () => await dumpCompressed(info.path, options.tmpDir, options.compression, options.compressionLevel, 'nix-store'))
        tempFiles.add(nar.file)
        if (!nar.narHash.equals(info.narHash) || nar.narSize !== info.narSize) {
          // Ask Nix itself before calling the store corrupt.
          tempFiles.delete(nar.file)
          await rm(nar.file, { force: true })
          nar = await dumpCompressed(info.path, options.tmpDir, options.compression, options.compressionLevel, 'nix-store')
          tempFiles.add(nar.file)
        }
        if (!nar.narHash.equals(info.narHash) || nar.narSize !== info.narSize) {
          failed.set(info.path, `the store path's NAR (${nar.narSize} bytes) does not match its recorded NarHash/NarSize; ` +
            'the local store may be corrupt (nix-store --verify --check-contents)')
          tempFiles.delete(nar.file)
          await rm(nar.file, { force: true })
          continue
        }
        if (options.batchNarBytes > 0 && nar.fileSize <= options.batchNarBytes) {
          batch.push({ info, nar })
          batchBytes += nar.fileSize
          if (batchBytes >= options.batchMaxBytes || batch.length >= 500) await flushBatch()
          continue
        }
        await retry(() => client.putNar(nar.url, nar.file, nar.fileSize))
        await narDone(info, nar)
      } catch (err) {
        if (err instanceof RefusedError) {
          failed.set(info.path, err.message)
        } else if (isGone(err)) {
          failed.set(info.path, `no longer in the local store (garbage-collected before upload): ${(err as Error).message}`)
        } else {
          abort ??= err
        }
      }
    }
  }

  try {
    await Promise.all(Array.from({ length: Math.max(1, options.concurrency) }, worker))
    if (abort === undefined) await flushBatch()
  } finally {
    await Promise.all([...tempFiles].map(f => rm(f, { force: true })))
  }
  if (abort !== undefined) throw abort
  if (options.signal?.aborted === true) throw new TransientError('push interrupted')

  // Narinfos, references first. A path whose NAR or reference failed is not sent.
  const uploaded: string[] = []
  const ordered = topologicalOrder(toUpload)
  const pending: Array<{ info: PathInfo, part: BatchPart }> = []
  for (const info of ordered) {
    const nar = nars.get(info.path)
    if (nar === undefined) {
      if (!failed.has(info.path)) failed.set(info.path, 'its NAR was not uploaded')
      continue
    }
    const blocked = info.references.find(ref => ref !== baseName(info.path) && [...failed.keys()].some(f => baseName(f) === ref))
    if (blocked !== undefined) {
      failed.set(info.path, `not uploaded: its reference ${blocked} failed`)
      continue
    }
    pending.push({ info, part: { name: `${hashPartOf(info.path)}.narinfo`, text: buildNarinfo(info, nar, options.keys) } })
  }
  for (let i = 0; i < pending.length; i += NARINFOS_PER_BATCH) {
    const chunk = pending.slice(i, i + NARINFOS_PER_BATCH)
    const results = await retry(() => client.uploadBatch(chunk.map(c => c.part), new Map()))
    for (const { info, part } of chunk) {
      const result = results.find(r => r.name === part.name)
      if (result === undefined || result.status >= 300) {
        failed.set(info.path, partReason(result, part.name))
      } else {
        uploaded.push(info.path)
        progress.pathsDone++
      }
    }
    report()
  }

  return {
    closureSize: infos.length,
    alreadyPresent: candidates.length - toUpload.length,
    skippedUpstream: skipped.length,
    uploaded,
    bytesSent,
    narBytes: toUpload.filter(i => uploaded.includes(i.path)).reduce((n, i) => n + i.narSize, 0),
    failed: [...failed].map(([path, reason]) => ({ path, reason })),
    elapsedMs: Date.now() - started
  }
}

function partReason (result: BatchPartResult | undefined, name: string): string {
  if (result === undefined) return `${name}: the server did not answer for this part`
  const detail = result.code !== undefined ? `${result.code}: ${result.message ?? ''}` : result.message ?? ''
  return `${name}: HTTP ${result.status}${detail === '' ? '' : `: ${detail.trim()}`}`
}

function isGone (err: unknown): boolean {
  const message = err instanceof Error ? err.message : ''
  return /is not valid|does not exist|No such file/i.test(message)
}
