/**
 * The pusher's HTTP client (undici), speaking two dialects to the server:
 *
 *   the Nix binary cache protocol, which any cache accepting `nix copy` understands
 *     HEAD /<hash32>.narinfo           is a path present?            (fallback, one per path)
 *     PUT  /nar/<filehash>.nar.zst     a NAR, streamed from its temp file, memory, or the store
 *     PUT  /<hash32>.narinfo           its signed narinfo
 *   narwhal's API (src/api/v1.ts), used when the server has it
 *     POST /api/v1/missing-paths       which of these paths are missing, in one round trip
 *     POST /api/v1/upload-batch        many small NARs or narinfos in one multipart request
 *
 * Every request carries `Authorization: Bearer TOKEN`. Failures are classified here once:
 * network errors, 408, 429 and 5xx are TransientError (with Retry-After); other 4xx are
 * RefusedError carrying the server's one-line reason.
 */
import { createReadStream, openAsBlob } from 'node:fs'
import { Readable } from 'node:stream'
import { Agent, FormData, request, type Dispatcher } from 'undici'
import {
  MAX_BATCH_PARTS, MAX_MISSING_QUERY, MISSING_PATHS_ROUTE, UPLOAD_BATCH_ROUTE,
  type BatchPartResult, type MissingPathsResponse, type UploadBatchResponse
} from '../api/v1.js'
import { isTransientStatus, parseRetryAfter, RefusedError, TransientError } from './retry.js'

export interface BatchPart {
  /** The protocol path: `nar/<hash>.nar.zst` or `<hash32>.narinfo`. */
  name: string
  /** A file to stream (NARs), or the NAR's bytes in memory … */
  file?: string
  chunks?: Buffer[]
  /** … or a small text (narinfos). */
  text?: string
}

type ResponseData = Dispatcher.ResponseData

function reasonOf (status: number, body: string): string {
  const line = body.split('\n').find(l => l.trim() !== '')?.trim() ?? ''
  return line === '' ? `HTTP ${status}` : `HTTP ${status}: ${line.slice(0, 500)}`
}

export class CacheClient {
  readonly server: string
  private readonly token: string | undefined
  private readonly agent: Agent
  /** undefined until the first try; false when the server lacks narwhal's API (plain Nix cache). */
  private hasApi: boolean | undefined

  constructor (server: string, token: string | undefined, connections = 8) {
    this.server = server.replace(/\/+$/, '')
    this.token = token
    this.agent = new Agent({ connections, keepAliveTimeout: 30_000, headersTimeout: 300_000, bodyTimeout: 300_000 })
  }

  async close (): Promise<void> {
    await this.agent.close()
  }

  private headers (extra: Record<string, string> = {}): Record<string, string> {
    const h: Record<string, string> = { 'user-agent': 'narwhal-pusher/0.1', ...extra }
    if (this.token !== undefined) h.authorization = `Bearer ${this.token}`
    return h
  }

  private async send (method: Dispatcher.HttpMethod, urlPath: string, options: {
    headers?: Record<string, string>, body?: Dispatcher.DispatchOptions['body'] | FormData
  } = {}): Promise<ResponseData> {
    try {
      return await request(`${this.server}/${urlPath.replace(/^\//, '')}`, {
        method,
        headers: this.headers(options.headers),
        body: options.body as Dispatcher.DispatchOptions['body'],
        dispatcher: this.agent
      })
    } catch (err) {
      const e = err as NodeJS.ErrnoException
      throw new TransientError(`${method} ${urlPath}: ${e.code ?? e.name}: ${e.message}`)
    }
  }

  /** Throws the classified error for a non-2xx answer, after reading its body. */
  private async check (response: ResponseData, what: string): Promise<string> {
    const body = await response.body.text()
    if (response.statusCode >= 200 && response.statusCode < 300) return body
    const reason = `${what}: ${reasonOf(response.statusCode, body)}`
    if (isTransientStatus(response.statusCode)) {
      throw new TransientError(reason, parseRetryAfter(response.headers['retry-after']))
    }
    throw new RefusedError(reason, response.statusCode)
  }

  /** The hash parts among `hashParts` the server does not have. */
  async missing (hashParts: string[]): Promise<string[]> {
    if (hashParts.length === 0) return []
    if (this.hasApi !== false) {
      const missing: string[] = []
      for (let i = 0; i < hashParts.length; i += MAX_MISSING_QUERY) {
        const chunk = hashParts.slice(i, i + MAX_MISSING_QUERY)
        const response = await this.send('POST', MISSING_PATHS_ROUTE, {
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ hashParts: chunk })
        })
        if (response.statusCode === 404 || response.statusCode === 405) {
          await response.body.dump()
          this.hasApi = false
          break
        }
        const body = await this.check(response, 'missing-paths query')
        this.hasApi = true
        missing.push(...(JSON.parse(body) as MissingPathsResponse).missing)
      }
      if (this.hasApi === true) return missing
    }
    // A plain Nix cache: one HEAD per path, a few at a time, as `nix copy` does with GETs.
    const result: string[] = []
    let next = 0
    const worker = async (): Promise<void> => {
      while (next < hashParts.length) {
        const hash = hashParts[next++] as string
        const response = await this.send('HEAD', `${hash}.narinfo`)
        await response.body.dump()
        if (response.statusCode === 404) result.push(hash)
        else if (response.statusCode >= 300) await this.check(response, `HEAD ${hash}.narinfo`)
      }
    }
    await Promise.all(Array.from({ length: 8 }, worker))
    return hashParts.filter(h => result.includes(h))
  }

  /** Sends a NAR from its file, from memory, or as `stream` produces it. */
  async putNar (url: string, body: { file?: string, chunks?: Buffer[], stream?: () => AsyncIterable<Buffer> }, size: number): Promise<void> {
    const response = await this.send('PUT', url, {
      headers: { 'content-type': 'application/x-nix-nar', 'content-length': String(size) },
      body: body.file !== undefined
        ? createReadStream(body.file, { highWaterMark: 1 << 20 })
        : Readable.from(body.stream?.() ?? body.chunks ?? [], { objectMode: false, highWaterMark: 1 << 20 })
    })
    await this.check(response, `PUT ${url}`)
  }

  async putNarinfo (hashPart: string, text: string): Promise<void> {
    const response = await this.send('PUT', `${hashPart}.narinfo`, {
      headers: { 'content-type': 'text/x-nix-narinfo' },
      body: text
    })
    await this.check(response, `PUT ${hashPart}.narinfo`)
  }

  /**
   * Sends parts in one multipart request when the server has the batch route, one PUT each
   * otherwise. Returns one result per part; a part's refusal is a result, not an exception, so
   * the caller can mark just that path failed. Transient failures throw.
   */
  async uploadBatch (parts: BatchPart[], sizes: Map<string, number>): Promise<BatchPartResult[]> {
    if (parts.length === 0) return []
    if (parts.length > MAX_BATCH_PARTS) throw new Error(`a batch holds at most ${MAX_BATCH_PARTS} parts`)
    if (this.hasApi !== false) {
      const form = new FormData()
      for (const part of parts) {
        if (part.file !== undefined) {
          form.append(part.name, await openAsBlob(part.file, { type: 'application/x-nix-nar' }), 'nar')
        } else if (part.chunks !== undefined) {
          form.append(part.name, new Blob(part.chunks, { type: 'application/x-nix-nar' }), 'nar')
        } else {
          form.append(part.name, new Blob([part.text ?? ''], { type: 'text/x-nix-narinfo' }), 'narinfo')
        }
      }
      const response = await this.send('POST', UPLOAD_BATCH_ROUTE, { body: form })
      if (response.statusCode === 404 || response.statusCode === 405) {
        await response.body.dump()
        this.hasApi = false
      } else {
        const body = await this.check(response, 'upload-batch')
        this.hasApi = true
        return (JSON.parse(body) as UploadBatchResponse).results
      }
    }
    const results: BatchPartResult[] = []
    for (const part of parts) {
      try {
        if (part.file !== undefined || part.chunks !== undefined) await this.putNar(part.name, part, sizes.get(part.name) ?? 0)
        else await this.putNarinfo(part.name.replace(/\.narinfo$/, ''), part.text ?? '')
        results.push({ name: part.name, status: 200, result: 'created' })
      } catch (err) {
        if (!(err instanceof RefusedError)) throw err
        results.push({ name: part.name, status: err.status, message: err.message })
      }
    }
    return results
  }
}
