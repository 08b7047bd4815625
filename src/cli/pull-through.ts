/**
 * Wires upstream caches into a server: the upstream implementation of the server's "on a miss,
 * ask this" (cache/pull-through.ts), or none when no upstream is configured.
 */
import pino from 'pino'
import type { UpstreamStatus } from '../cache/browse.js'
import type { OpenCache } from '../cache/open-cache.js'
import type { PullLog, PullThrough } from '../cache/pull-through.js'
import type { Config } from '../config/config.js'
import { parseDatabaseUrl } from '../db/database-url.js'
import { SOLE_PROCESS, claimsInTurn, type FetchClaims } from '../upstream/fetch-claims.js'

/**
 * `log` is for what happens outside any request; by default JSON lines on stdout, like Fastify's.
 * `claims`: a worker of `serve --workers N` takes turns with its siblings (nar-fetch-claims.ts).
 * On PostgreSQL, replicas may share the cache: the turns are then taken across them too, after
 * the siblings' (db/postgres/fetch-locks.ts).
 * The upstream code (and undici, its HTTP client) and the PostgreSQL locks (and pg) are loaded
 * only when configured: a server without them is spared their memory in every process.
 */
export async function pullThroughFor (config: Readonly<Config>, cache: OpenCache, log?: PullLog, siblings?: FetchClaims): Promise<PullThrough | undefined> {
  if (config.upstreams.length === 0) return undefined
  const { UpstreamPullThrough } = await import('../upstream/pull-through.js')
  const location = config.database === null ? undefined : parseDatabaseUrl(config.database)
  let claims = siblings
  if (location?.kind === 'postgres') {
    const { PgFetchLocks } = await import('../db/postgres/fetch-locks.js')
    claims = claimsInTurn(siblings ?? SOLE_PROCESS, new PgFetchLocks(location))
  }
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
