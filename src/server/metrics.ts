/**
 * Prometheus metrics at GET /metrics: process defaults (memory, event-loop lag, GC) plus what an
 * operator of a cache asks first: how many requests of each kind and outcome, how many uploads
 * were refused and why, how many bytes came in and went out, and what garbage collection did.
 */
import type { FastifyInstance } from 'fastify'
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client'
import type { CacheContext } from './context.js'
import { metricsFromPrimary, shareRegistry } from './cluster-metrics.js'

/**
 * Garbage collection may run in another process (`narwhal gc`, or the one server process that
 * runs the schedule), so these are read from the database's record of runs at each scrape.
 * With several workers each reads the same rows, so merging takes the largest value (a worker
 * that read a moment later may have seen one more run) instead of adding them up N times.
 */
type Retention = CacheContext['metadata']['retention']

function registerGcMetrics (registry: Registry, retention: Retention): void {
  const fromTotals = (name: string, help: string, pick: (t: Awaited<ReturnType<Retention['gcTotals']>>) => number): void => {
    registry.registerMetric(new Counter({
      name,
      help,
      registers: [],
      aggregator: 'max',
      async collect () {
        const totals = await retention.gcTotals()
        this.reset()
        this.inc(pick(totals))
      }
    }))
  }
  fromTotals('narwhal_gc_runs_total', 'Garbage collections run (narwhal gc and the schedule, not dry runs)', t => t.runs)
  fromTotals('narwhal_gc_removed_store_paths_total', 'Store paths (narinfos) removed by garbage collection', t => t.storePaths)
  fromTotals('narwhal_gc_removed_nar_files_total', 'NAR files removed by garbage collection', t => t.narFiles)
  fromTotals('narwhal_gc_removed_bytes_total', 'NAR file bytes removed by garbage collection', t => t.bytes)
  registry.registerMetric(new Gauge({
    name: 'narwhal_gc_last_run_timestamp_seconds',
    help: 'When the last garbage collection finished (unix seconds; 0 before the first)',
    registers: [],
    aggregator: 'max',
    async collect () {
      const last = await retention.lastGcRun()
      if (last !== undefined) this.set(last.finishedAt / 1000)
    }
  }))
  registry.registerMetric(new Gauge({
    name: 'narwhal_gc_remaining_bytes',
    help: 'NAR file bytes the cache held after the last garbage collection',
    registers: [],
    aggregator: 'max',
    async collect () {
      const last = await retention.lastGcRun()
      if (last !== undefined) this.set(last.remainingBytes)
    }
  }))
}

/**
 * Counts one answered request: what the onResponse hook does for every request Fastify answers,
 * and what server/fast-reads.ts does for the ones it answers itself. `route` is the route's URL
 * pattern ('unmatched' when none), `receivedHeader` the request's Content-Length header.
 */
export type CountResponse = (method: string, route: string, status: number, receivedHeader: string | undefined, sentBytes: number) => void

/**
 * `cluster`: this process is one worker of `narwhal serve --workers N`, and /metrics answers for
 * all of them (server/cluster-metrics.ts). Request and byte counters are summed over the workers.
 * So are the process metrics (memory, CPU seconds, handles: what the server as a whole uses, the
 * figure to compare with one process; the primary, which serves nothing, is left out), except
 * those prom-client merges otherwise: event-loop lag is averaged, the Node version taken once.
 */
export function registerMetrics (app: FastifyInstance, options: { cluster: boolean }): CountResponse {
  const registry = new Registry()
  collectDefaultMetrics({ register: registry, prefix: 'narwhal_' })
  if (options.cluster) shareRegistry(registry)
  const requests = new Counter({
    name: 'narwhal_http_requests_total',
    help: 'HTTP requests by method, route and status code',
    labelNames: ['method', 'route', 'status'] as const,
    registers: [registry]
  })
  const refusals = new Counter({
    name: 'narwhal_refusals_total',
    help: 'Requests refused, by NARWHAL_ error code (misses are not refusals: see status 404 in narwhal_http_requests_total)',
    labelNames: ['code'] as const,
    registers: [registry]
  })
  const bytesIn = new Counter({ name: 'narwhal_received_bytes_total', help: 'Request body bytes announced by Content-Length', registers: [registry] })
  const bytesOut = new Counter({ name: 'narwhal_sent_bytes_total', help: 'Response bytes sent (Content-Length)', registers: [registry] })
  registerGcMetrics(registry, app.narwhal.metadata.retention)
  app.narwhal.pullThrough?.registerMetrics(registry)

  const countResponse: CountResponse = (method, route, status, receivedHeader, sentBytes) => {
    requests.inc({ method, route, status })
    if (receivedHeader !== undefined) {
      const bytes = Number(receivedHeader)
      if (Number.isFinite(bytes)) bytesIn.inc(bytes)
    }
    if (method !== 'HEAD' && Number.isFinite(sentBytes) && sentBytes > 0) bytesOut.inc(sentBytes)
  }
  // Callback-style hooks rather than async ones: these run on every request, and an async hook
  // costs a promise and a microtask each time.
  app.addHook('onResponse', (request, reply, done) => {
    countResponse(request.method, request.routeOptions.url ?? 'unmatched', reply.statusCode,
      request.headers['content-length'], Number(reply.getHeader('content-length') ?? 0))
    done()
  })
  app.addHook('onError', (_request, _reply, err, done) => {
    const code = (err as { code?: unknown }).code
    // A miss is not a refusal; misses are counted in requests_total under status 404.
    if (code !== 'NARWHAL_NOT_FOUND') refusals.inc({ code: typeof code === 'string' && code.startsWith('NARWHAL_') ? code : 'OTHER' })
    done()
  })
  app.get('/metrics', async (_request, reply) => {
    const text = options.cluster ? await metricsFromPrimary() : await registry.metrics()
    return reply.header('content-type', registry.contentType).send(text)
  })
  return countResponse
}
