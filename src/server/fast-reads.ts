/**
 * `GET /<hash32>.narinfo` answered before Fastify sees the request.
 *
 * A narinfo GET is most of a cache's traffic: Nix asks for every path of a closure before it
 * substitutes (four times each, in Nix 2.8) and before it uploads. Answered by the route, a hit
 * spends more time in Fastify's request and reply objects, routing and hooks than in the answer;
 * answered here, it is a regular expression, a lookup in memory (Metadata.narinfoBody), the
 * metrics counters, and one write. Measured in BENCHMARKS.md (2026-11-30, late evening).
 *
 * The answer is the route's (routes/narinfo.ts), to the byte: same status, headers and body, the
 * read noted for gc, the request counted in /metrics under the route's label. Everything else
 * goes on to Fastify: other methods and URLs (a query string, a doubled slash), a GET with a
 * body, a server that is closing (Fastify answers 503), and every request when a read needs
 * something only Fastify's hooks do: a private cache (a token), a read budget (the rate limit),
 * or a log of every request (logLevel debug or trace).
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { FastifyInstance } from 'fastify'
import { HASH_PART_PATTERN } from '../nix/store-path.js'
import type { CountResponse } from './metrics.js'
import { MISS_TYPE, NARINFO_ROUTE, NARINFO_TYPE, narinfoMissBody } from './routes/narinfo.js'

/** Answers the request and returns true, or returns false having done nothing. */
export type FastRead = (request: IncomingMessage, response: ServerResponse) => boolean

const NARINFO_URL = new RegExp(`^/(${HASH_PART_PATTERN})\\.narinfo$`)

/** The fast path for this app, or undefined when its configuration needs Fastify for every read. */
export function narinfoFastPath (app: FastifyInstance, countResponse: CountResponse): FastRead | undefined {
  const { config, metadata, access } = app.narwhal
  const readBudget = config.rateLimit.enabled && config.rateLimit.reads > 0
  if (config.private || readBudget || config.logLevel === 'debug' || config.logLevel === 'trace') return undefined
  let closing = false
  app.addHook('preClose', async () => { closing = true })
  return (request, response) => {
    if (request.method !== 'GET' || closing) return false
    if (request.headers['content-length'] !== undefined || request.headers['transfer-encoding'] !== undefined) return false
    const hashPart = NARINFO_URL.exec(request.url ?? '')?.[1]
    if (hashPart === undefined) return false
    let body: Buffer | undefined
    try {
      body = metadata.narinfoBody(hashPart)
    } catch {
      // The route asks again and its error handler answers as for any other failure.
      return false
    }
    let status = 200
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
}
