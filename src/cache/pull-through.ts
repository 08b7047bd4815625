/**
 * What the server asks when it does not hold a path: "on a miss, ask this". The server layer
 * knows only this interface; `narwhal serve` passes the implementation that asks upstream caches
 * (src/upstream/pull-through.ts), and without upstreams there is none and a miss is a 404.
 */
import type { ServerResponse } from 'node:http'
import type { Registry } from 'prom-client'
import type { UpstreamStatus } from './browse.js'

/** Where a reference may be held besides the cache's own narinfos (write rule 5, accept-narinfo.ts). */
/** The part of a pino logger used here (Fastify's request.log is one). */
export interface PullLog {
  info: (obj: object, msg: string) => void
  warn: (obj: object, msg: string) => void
  error: (obj: object, msg: string) => void
}

export type PulledNar =
  /** The NAR is in the cache now (fetched, or fetched meanwhile): serve it like any other. */
  | { kind: 'stored' }
  /**
   * The NAR is being fetched: `sendTo` streams it to the response (whose headers the caller has
   * written, with Content-Length `fileSize`) and resolves when the response ends or is cut off.
   * The last bytes are sent only once the whole NAR verified: a NAR that does not verify is never
   * received whole.
   */
  | { kind: 'streaming', fileSize: number, sendTo: (response: ServerResponse) => Promise<void> }

export interface PullThrough {
  /**
   * The narinfo of a path pulled before and still served, without asking anyone or waiting (for
   * the fast read path, server/fast-reads.ts); undefined otherwise, or when only waiting could tell.
   */
  pulledNarinfo: (hashPart: string) => Buffer | undefined
  /** The narinfo for a path the cache does not hold, from an upstream; undefined when none has one it can verify. */
  narinfo: (hashPart: string, log: PullLog) => Promise<Buffer | undefined>
  /** The size of a NAR a served upstream narinfo names, without fetching it (HEAD); undefined when none does. */
  narFileSize: (fileHash: string) => Promise<number | undefined>
  /**
   * A NAR a served upstream narinfo names, fetched once however many ask; undefined when none
   * names it. `stream: false` waits until it is stored. Throws NARWHAL_UPSTREAM_FAILED (or
   * NARWHAL_NOT_FOUND) when it cannot be had.
   */
  nar: (fileHash: string, log: PullLog, options: { stream: boolean }) => Promise<PulledNar | undefined>
  /**
   * Before a pushed narinfo's write rules run: asks the upstreams for each of its references the
   * cache does not hold, so that the write rules find them (NarinfoStore.insert). Text that does not parse is left to the rules.
   */
  lookupReferences: (narinfoText: string, log: PullLog) => Promise<void>
  /** Each upstream and how it is doing, for the front page. */
  status: () => UpstreamStatus[]
  /** Adds the per-upstream counters to /metrics. */
  registerMetrics: (registry: Registry) => void
  /** Waits for the NAR fetches under way to be stored, then closes the upstream connections. */
  close: () => Promise<void>
}
