/**
 * One upstream cache as narwhal asks it: its keys, its HTTP connections (undici, with connect and
 * answer timeouts), its credentials, the misses it answered lately, and whether it failed so
 * often lately that it is skipped for a while.
 */
import { Agent, interceptors, request, type Dispatcher } from 'undici'
import { ConfigError } from '../config/values.js'
import type { UpstreamConfig } from '../config/upstreams.js'
import { NarwhalError, isNarwhalError } from '../errors.js'
import { parsePublicKey, TrustedKeys } from '../signing/keys.js'
import { netrcAuthorization } from './netrc.js'

/** Failures in a row after which an upstream is skipped for failureBackoffSeconds. */
export const FAILURES_BEFORE_BACKOFF = 3

/**
 * Redirects followed per request at most (an upstream may send its files from elsewhere, as a
 * bucket behind a CDN does); past that the upstream's 3xx is a failure like any other status.
 */
export const MAX_REDIRECTS = 5

/** Misses remembered per upstream at most; the oldest are forgotten first. */
const MAX_REMEMBERED_MISSES = 100_000

export type NarinfoAnswer =
  | { kind: 'found', text: string }
  /** `remembered`: answered from the misses of the last negativeCacheSeconds, not asked. */
  | { kind: 'missing', remembered: boolean }
  | { kind: 'skipped' }
  | { kind: 'failed', error: unknown }

export class Upstream {
  readonly url: string
  readonly keys: TrustedKeys
  readonly config: UpstreamConfig
  readonly #agent: Agent
  readonly #dispatcher: Dispatcher
  readonly #headers: Record<string, string>
  /** hash part -> until when (ms) a miss is remembered; Map order is insertion order. */
  readonly #misses = new Map<string, number>()
  #failuresInARow = 0
  #skippedUntil = 0

  constructor (config: UpstreamConfig, index: number) {
    this.config = config
    this.url = config.url
    const key = `upstreams[${index}]`
    this.keys = new TrustedKeys(config.publicKeys.map((text, i) => {
      try {
        return parsePublicKey(text)
      } catch (err) {
        throw new ConfigError(`${key}.publicKeys[${i}]: ${isNarwhalError(err) ? err.message : 'not a public key'} ` +
          `(${config.url}; expected NAME:BASE64 of 32 bytes, e.g. cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=)`)
      }
    }))
    this.#headers = { 'user-agent': 'narwhal' }
    if (config.token !== null) this.#headers.authorization = `Bearer ${config.token}`
    if (config.netrcFile !== null) this.#headers.authorization = netrcAuthorization(config.netrcFile, new URL(config.url).hostname, `${key}.netrcFile`)
    this.#agent = new Agent({
      connect: { timeout: config.connectSeconds * 1000 },
      // Until the status line and headers, and then between two pieces of a body.
      headersTimeout: config.answerSeconds * 1000,
      bodyTimeout: config.answerSeconds * 1000
    })
    // undici drops the Authorization header when a redirect leads to another origin.
    this.#dispatcher = this.#agent.compose(interceptors.redirect({ maxRedirections: MAX_REDIRECTS }))
  }

  /** Asks for `<hashPart>.narinfo`; `maxBytes` bounds the answer. */
  async narinfo (hashPart: string, maxBytes: number, now = Date.now()): Promise<NarinfoAnswer> {
    const missUntil = this.#misses.get(hashPart)
    if (missUntil !== undefined) {
      if (missUntil > now) return { kind: 'missing', remembered: true }
      this.#misses.delete(hashPart)
    }
    if (this.#skippedUntil > now) return { kind: 'skipped' }
    try {
      const response = await this.#get(`${this.url}/${hashPart}.narinfo`)
      // 403 too: S3 buckets answer it for a key that does not exist, and Nix reads it as a miss.
      if (response.statusCode === 404 || response.statusCode === 403) {
        await response.body.dump()
        this.succeeded()
        this.rememberMiss(hashPart, now)
        return { kind: 'missing', remembered: false }
      }
      if (response.statusCode !== 200) {
        await response.body.dump()
        throw new NarwhalError('NARWHAL_UPSTREAM_FAILED', `${this.url} answered ${response.statusCode} for ${hashPart}.narinfo`)
      }
      const text = await readText(response.body, maxBytes)
      this.succeeded()
      return { kind: 'found', text }
    } catch (error) {
      this.failed(now)
      return { kind: 'failed', error }
    }
  }

  /**
   * Starts the download of a NAR its narinfo names (`narUrl`, relative to the upstream): the
   * answer once its status is 200; throws NARWHAL_NOT_FOUND on 404 and NARWHAL_UPSTREAM_FAILED
   * otherwise. The URL must stay under the upstream's own; the upstream may redirect it anywhere
   * (MAX_REDIRECTS), as what arrives is verified against the signed narinfo wherever it came from.
   */
  async nar (narUrl: string): Promise<Dispatcher.ResponseData> {
    const url = new URL(narUrl, this.url + '/').toString()
    if (!url.startsWith(this.url + '/')) throw upstreamFailed(new Error(`the narinfo of ${this.url} names a NAR outside it (${narUrl})`))
    let response: Dispatcher.ResponseData
    try {
      response = await this.#get(url)
    } catch (error) {
      this.failed()
      throw upstreamFailed(new Error(`${url} could not be fetched (${describe(error)})`, { cause: error }))
    }
    if (response.statusCode !== 200) {
      await response.body.dump().catch(() => {})
      if (response.statusCode === 404 || response.statusCode === 403) {
        throw new NarwhalError('NARWHAL_NOT_FOUND', 'the upstream cache no longer has this NAR',
          { cause: new Error(`${url} answered ${response.statusCode}`) })
      }
      this.failed()
      throw upstreamFailed(new Error(`${url} answered ${response.statusCode}`))
    }
    return response
  }

  /** For the front page: "up", or "skipped" while failures pause it. */
  state (now = Date.now()): { state: string, detail?: string } {
    if (this.#skippedUntil > now) {
      return { state: 'skipped', detail: `failed ${FAILURES_BEFORE_BACKOFF} times in a row; asked again in ${Math.ceil((this.#skippedUntil - now) / 1000)} s` }
    }
    return this.#failuresInARow === 0 ? { state: 'up' } : { state: 'up', detail: `${this.#failuresInARow} failure(s) in a row` }
  }

  succeeded (): void {
    this.#failuresInARow = 0
  }

  /** Counts a failure; the FAILURES_BEFORE_BACKOFF-th in a row starts a pause. */
  failed (now = Date.now()): void {
    this.#failuresInARow++
    if (this.#failuresInARow >= FAILURES_BEFORE_BACKOFF) {
      this.#skippedUntil = now + this.config.failureBackoffSeconds * 1000
      this.#failuresInARow = 0
    }
  }

  async close (): Promise<void> {
    await this.#agent.close()
  }

  /** Answers `missing` for this hash part for negativeCacheSeconds (a miss, or a narinfo refused). */
  rememberMiss (hashPart: string, now = Date.now()): void {
    if (this.config.negativeCacheSeconds === 0) return
    if (this.#misses.size >= MAX_REMEMBERED_MISSES) {
      const oldest = this.#misses.keys().next().value
      if (oldest !== undefined) this.#misses.delete(oldest)
    }
    this.#misses.set(hashPart, now + this.config.negativeCacheSeconds * 1000)
  }

  async #get (url: string): Promise<Dispatcher.ResponseData> {
    return await request(url, { dispatcher: this.#dispatcher, headers: this.#headers })
  }
}

async function readText (body: Dispatcher.ResponseData['body'], maxBytes: number): Promise<string> {
  const chunks: Buffer[] = []
  let bytes = 0
  for await (const chunk of body as AsyncIterable<Buffer>) {
    bytes += chunk.length
    if (bytes > maxBytes) {
      body.destroy()
      throw new NarwhalError('NARWHAL_TOO_LARGE', `upstream narinfo is larger than ${maxBytes} bytes (limits.narinfoBytes)`)
    }
    chunks.push(chunk)
  }
  return Buffer.concat(chunks).toString('utf8')
}

/**
 * What a client is told when a NAR cannot be had from an upstream (a 502): no URL or OS error,
 * which `cause` carries to the log (describe).
 */
export function upstreamFailed (cause: Error): NarwhalError {
  return new NarwhalError('NARWHAL_UPSTREAM_FAILED', 'the upstream cache could not provide this NAR now; try again later', { cause })
}

/** A short description of a failure for the log: the error's code or message, and its cause's. */
export function describe (error: unknown): string {
  if (isNarwhalError(error)) return error.cause === undefined ? error.message : `${error.message}: ${describe(error.cause)}`
  const e = error as { code?: unknown, message?: unknown }
  return typeof e.code === 'string' ? e.code : typeof e.message === 'string' ? e.message : String(error)
}
