/**
 * The retry policy. Transient failures (the network, 408, 429, 5xx) are retried with exponential
 * backoff and full jitter, never sooner than a `Retry-After` the server sent; anything else the
 * server refuses (other 4xx) is final, with the server's reason kept for `queue status`.
 */

export class TransientError extends Error {
  /** Milliseconds the server asked us to wait (Retry-After), if it did. */
  readonly retryAfterMs: number | undefined
  constructor (message: string, retryAfterMs?: number) {
    super(message)
    this.name = 'TransientError'
    this.retryAfterMs = retryAfterMs
  }
}

/** A refusal that will not change by retrying: 4xx other than 408 and 429. */
export class RefusedError extends Error {
  readonly status: number
  constructor (message: string, status: number) {
    super(message)
    this.name = 'RefusedError'
    this.status = status
  }
}

export function isTransientStatus (status: number): boolean {
  return status === 408 || status === 429 || status >= 500
}

/** `Retry-After` as delta-seconds or an HTTP date; undefined when absent or unparseable. */
export function parseRetryAfter (value: string | string[] | undefined, now = Date.now()): number | undefined {
  const v = Array.isArray(value) ? value[0] : value
  if (v === undefined || v.trim() === '') return undefined
  if (/^\d+$/.test(v.trim())) return Number(v.trim()) * 1000
  const at = Date.parse(v)
  return Number.isNaN(at) ? undefined : Math.max(0, at - now)
}

export interface BackoffOptions {
  baseMs: number
  maxMs: number
  random?: () => number
}

/**
 * The wait before retry number `attempt` (0 = first retry): full jitter over
 * min(max, base·2^attempt), at least `retryAfterMs` (itself capped at max).
 */
export function backoffDelay (attempt: number, options: BackoffOptions, retryAfterMs?: number): number {
  const random = options.random ?? Math.random
  const ceiling = Math.min(options.maxMs, options.baseMs * 2 ** Math.min(attempt, 30))
  // Half fixed, half random: never hammers at once, never waits longer than the ceiling.
  const jittered = ceiling / 2 + random() * ceiling / 2
  const floor = retryAfterMs === undefined ? 0 : Math.min(retryAfterMs, options.maxMs)
  return Math.round(Math.max(jittered, floor))
}

export function sleep (ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise(resolve => {
    if (signal?.aborted === true) { resolve(); return }
    const timer = setTimeout(done, ms)
    function done (): void {
      clearTimeout(timer)
      signal?.removeEventListener('abort', done)
      resolve()
    }
    signal?.addEventListener('abort', done, { once: true })
  })
}

/**
 * Runs `fn`, retrying transient failures up to `attempts` times in total with backoff. Used per
 * request, so one flaky answer does not restart a whole closure; the queue retries whole jobs
 * on a longer schedule.
 */
export async function withRetries<T> (fn: () => Promise<T>, attempts: number, options: BackoffOptions,
  signal?: AbortSignal): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await fn()
    } catch (err) {
      if (!(err instanceof TransientError) || attempt + 1 >= attempts || signal?.aborted === true) throw err
      await sleep(backoffDelay(attempt, options, err.retryAfterMs), signal)
    }
  }
}
