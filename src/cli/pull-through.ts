/**
 * Wires upstream caches into a server: the upstream implementation of the server's "on a miss,
 * ask this" (cache/pull-through.ts), or none when no upstream is configured.
 */
import pino from 'pino'
import type { UpstreamStatus } from '../cache/browse.js'
import type { OpenCache } from '../cache/open-cache.js'
import type { PullLog, PullThrough } from '../cache/pull-through.js'
import type { Config } from '../config/config.js'
import type { FetchClaims } from '../upstream/fetch-claims.js'

/**
 * `log` is for what happens outside any request; by default JSON lines on stdout, like Fastify's.
 * `claims`: a worker of `serve --workers N` takes turns with its siblings (nar-fetch-claims.ts).
 * The upstream code (and undici, its HTTP client) is loaded only when an upstream is configured:
 * a server without one is spared its memory in every process.
 */
export async function pullThroughFor (config: Readonly<Config>, cache: OpenCache, log?: PullLog, claims?: FetchClaims): Promise<PullThrough | undefined> {
  if (config.upstreams.length === 0) return undefined
  const { UpstreamPullThrough } = await import('../upstream/pull-through.js')
  return new UpstreamPullThrough({
    config,
    metadata: cache.metadata,
    blobs: cache.blobs,
    provenance: cache.provenance,
    log: log ?? pino({ level: config.logLevel }),
    claims
  })
}

/** The server context's part for upstreams: the pull-through, and its states for the front page. */
export function upstreamContext (pullThrough: PullThrough | undefined): { pullThrough?: PullThrough, upstreams?: () => UpstreamStatus[] } {
  return pullThrough === undefined ? {} : { pullThrough, upstreams: () => pullThrough.status() }
}
