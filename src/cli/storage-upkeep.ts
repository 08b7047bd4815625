/**
 * What a serving process does to its NAR storage once it starts: sweep what killed uploads left
 * (BlobStore.sweep) and publish nix-cache-info. A bucket that cannot be reached at start
 * (NARWHAL_STORAGE_UNAVAILABLE) must not keep the server down: narinfos are answered from the
 * database and NAR reads and uploads get 503 + Retry-After until it is back. So that kind is
 * logged and the upkeep retried on a timer until it succeeds; any other failure still stops the
 * start. Retrying later is safe only for a bucket (its sweep spares uploads younger than a grace,
 * so uploads in flight by then are untouched); the data folder's sweep never fails that way.
 */
import type { Logger } from 'pino'
import { isNarwhalError } from '../errors.js'
import type { BlobStore } from '../storage/blob-store.js'

/** How long to wait before trying an unreachable store again. */
export const UPKEEP_RETRY_MS = 30_000

export interface StorageUpkeep {
  /** Resolves once the upkeep has succeeded (never, if stopped before). */
  readonly done: Promise<void>
  stop: () => void
}

/**
 * Runs the upkeep now and, while the store is unavailable, again every `retryMs`. Resolves after
 * the first attempt; throws what is not NARWHAL_STORAGE_UNAVAILABLE from that first attempt.
 */
export async function startStorageUpkeep (blobs: BlobStore, cacheInfo: string, log: Pick<Logger, 'info' | 'warn'>,
  retryMs = UPKEEP_RETRY_MS): Promise<StorageUpkeep> {
  let timer: NodeJS.Timeout | undefined
  let stopped = false
  let succeeded: () => void = () => {}
  const done = new Promise<void>(resolve => { succeeded = resolve })
  const attempt = async (): Promise<boolean> => {
    try {
      await blobs.sweep()
      await blobs.publishCacheInfo(cacheInfo)
      succeeded()
      return true
    } catch (err) {
      if (!isNarwhalError(err) || err.code !== 'NARWHAL_STORAGE_UNAVAILABLE') throw err
      log.warn({ code: err.code, reason: err.message, retryInSeconds: retryMs / 1000 },
        'storage upkeep (sweep of unfinished uploads, nix-cache-info) failed: serving without it, retrying later')
      return false
    }
  }
  const retry = (): void => {
    timer = setTimeout(() => {
      attempt().then(ok => {
        if (ok) log.info('storage upkeep done: the object store is reachable again')
        else if (!stopped) retry()
      }, (err: unknown) => {
        log.warn({ err }, 'storage upkeep failed; not retried')
      })
    }, retryMs)
    timer.unref()
  }
  if (!await attempt()) retry()
  return {
    done,
    stop: () => { stopped = true; if (timer !== undefined) clearTimeout(timer) }
  }
}
