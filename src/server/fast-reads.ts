/**
 * The most frequent reads answered before Fastify sees the request: `GET /<hash32>.narinfo`, and
 * `GET /nar/<filehash>.nar[.ext]` of a whole NAR file of at most 64 KiB.
 *
 * A narinfo GET is most of a cache's traffic: Nix asks for every path of a closure before it
 * substitutes (four times each, in Nix 2.8) and before it uploads; and most NARs of a closure are
 * small (half of the benchmark closure's are under 200 bytes). Answered by a route, such a read
 * spends more time in Fastify's request and reply objects, routing and hooks than in its answer;
 * answered here, it is a regular expression, the bytes from memory (narinfos: NarinfoStore.peekBody;
 * small NARs: the cache below), the metrics counters, and one write. Measured in BENCHMARKS.md
 * (2026-11-30, late evening). Both memories are forgotten whenever MetadataStore.servedGeneration
 * says something served may have changed: at once for this process's own writes, within the
 * store's freshness bound for other processes'. What the store cannot say without waiting goes
 * on to the route.
 *
 * The answer is the route's (routes/narinfo.ts, routes/nar.ts), to the byte: same status, headers
 * and body, the read noted for gc, the request counted in /metrics under the route's label.
 * Everything else goes on to Fastify: other methods and URLs (a query string, a doubled slash),
 * a GET with a body or a Range, a NAR that is larger, missing or not as recorded (the route logs
 * it) or in a blob store that cannot answer at once (BlobStore.immediate: S3), a server that is closing (Fastify answers 503), and every request when a read needs
 * something only Fastify's hooks do: a private cache (a token), a read budget (the rate limit),
 * or a log of every request (logLevel debug or trace).
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { FastifyInstance } from 'fastify'
import { readSmallNarNow, storedNow } from '../cache/nar-reads.js'
import { BodyCache } from '../nix/body-cache.js'
import { parseNarUrl } from '../nix/nar-url.js'
import { HASH_PART_PATTERN } from '../nix/store-path.js'
import type { CountResponse } from './metrics.js'
import { NAR_ROUTE, narHeaders, SMALL_BODY_BYTES } from './routes/nar.js'
import { MISS_TYPE, NARINFO_ROUTE, NARINFO_TYPE, narinfoMissBody } from './routes/narinfo.js'

/** Answers the request and returns true, or returns false having done nothing. */
export type FastRead = (request: IncomingMessage, response: ServerResponse) => boolean

const NARINFO_URL = new RegExp(`^/(${HASH_PART_PATTERN})\\.narinfo$`)

/** Small NAR files kept in memory per process: at least 256 of 64 KiB, thousands of typical ones. */
const SMALL_NAR_CACHE_BYTES = 16 * 1024 * 1024

/** The fast path for this app, or undefined when its configuration needs Fastify for every read. */
export function fastReads (app: FastifyInstance, countResponse: CountResponse): FastRead | undefined {
  const { config, metadata, access } = app.narwhal
  const readBudget = config.rateLimit.enabled && config.rateLimit.reads > 0
  if (config.private || readBudget || config.logLevel === 'debug' || config.logLevel === 'trace') return undefined
  let closing = false
  app.addHook('preClose', async () => { closing = true })
  const answerNarinfo = (hashPart: string, response: ServerResponse): boolean => {
    let body: Buffer | undefined
    try {
      const known = metadata.narinfos.peekBody(hashPart)
      if (known === undefined) return false
      body = known ?? app.narwhal.pullThrough?.pulledNarinfo(hashPart)
    } catch {
      // The route asks again and its error handler answers as for any other failure.
      return false
    }
    let status = 200
    // A miss may be an upstream's to answer: the route asks it.
    if (body === undefined && app.narwhal.pullThrough !== undefined) return false
    if (body === undefined) {
      status = 404
      body = Buffer.from(narinfoMissBody(hashPart), 'utf8')
      response.writeHead(status, { 'content-type': MISS_TYPE, 'content-length': body.length })
    } else {
      access.narinfo(hashPart)
      response.writeHead(status, { 'content-type': NARINFO_TYPE, 'content-length': body.length })
    }
    response.end(body)
    countResponse('GET', NARINFO_ROUTE, status, undefined, body.length)
    return true
  }

  // Only NARs that were served whole are kept: a miss, a large or a damaged file goes to the route.
  const smallNars = new BodyCache(SMALL_NAR_CACHE_BYTES)
  const readSmallNar = (fileHash: string): Buffer | undefined => {
    smallNars.keepFor(metadata.servedGeneration())
    const known = smallNars.get(fileHash)
    // Still served only while its file is on disk as recorded: a file removed or cut short by
    // hand is a 404 from the route (which logs it), as it would be without this memory. One
    // stat instead of a lookup, an open, an fstat, a read and a close.
    if (known !== undefined && known !== null && storedNow(app.narwhal, fileHash, known.length)) return known
    const body = readSmallNarNow(app.narwhal, fileHash, SMALL_BODY_BYTES)
    if (body !== undefined) smallNars.set(fileHash, body)
    return body
  }

  const answerSmallNar = (fileHash: string, response: ServerResponse): boolean => {
    let body: Buffer | undefined
    try {
      body = readSmallNar(fileHash)
    } catch {
      return false
    }
    if (body === undefined) return false
    access.narFile(fileHash)
    response.writeHead(200, { ...narHeaders(fileHash), 'content-length': body.length })
    response.end(body)
    countResponse('GET', NAR_ROUTE, 200, undefined, body.length)
    return true
  }

  return (request, response) => {
    if (request.method !== 'GET' || closing) return false
    const { headers } = request
    if (headers['content-length'] !== undefined || headers['transfer-encoding'] !== undefined || headers.range !== undefined) return false
    const url = request.url ?? ''
    const hashPart = NARINFO_URL.exec(url)?.[1]
    if (hashPart !== undefined) return answerNarinfo(hashPart, response)
    const nar = url.startsWith('/nar/') ? parseNarUrl(url.slice(1)) : undefined
    if (nar !== undefined) return answerSmallNar(nar.fileHash, response)
    return false
  }
}
