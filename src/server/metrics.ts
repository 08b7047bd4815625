/**
 * Prometheus metrics at GET /metrics: process defaults (memory, event-loop lag, GC) plus what an
 * operator of a cache asks first: how many requests of each kind and outcome, how many uploads
 * were refused and why, how many bytes came in and went out.
 */
import type { FastifyInstance } from 'fastify'
import { Counter, Registry, collectDefaultMetrics } from 'prom-client'

export function registerMetrics (app: FastifyInstance): void {
  const registry = new Registry()
  collectDefaultMetrics({ register: registry, prefix: 'narwhal_' })
  const requests = new Counter({
    name: 'narwhal_http_requests_total',
    help: 'HTTP requests by method, route and status code',
    labelNames: ['method', 'route', 'status'] as const,
    registers: [registry]
  })
  const refusals = new Counter({
    name: 'narwhal_refusals_total',
    help: 'Requests refused, by NARWHAL_ error code',
    labelNames: ['code'] as const,
    registers: [registry]
  })
  const bytesIn = new Counter({ name: 'narwhal_received_bytes_total', help: 'Request body bytes announced by Content-Length', registers: [registry] })
  const bytesOut = new Counter({ name: 'narwhal_sent_bytes_total', help: 'Response bytes sent (Content-Length)', registers: [registry] })

  app.addHook('onResponse', async (request, reply) => {
    requests.inc({ method: request.method, route: request.routeOptions.url ?? 'unmatched', status: reply.statusCode })
    const received = Number(request.headers['content-length'] ?? 0)
    if (Number.isFinite(received)) bytesIn.inc(received)
    const sent = Number(reply.getHeader('content-length') ?? 0)
    if (request.method !== 'HEAD' && Number.isFinite(sent)) bytesOut.inc(sent)
  })
  app.addHook('onError', async (_request, _reply, err) => {
    const code = (err as { code?: unknown }).code
    refusals.inc({ code: typeof code === 'string' && code.startsWith('NARWHAL_') ? code : 'OTHER' })
  })
  app.get('/metrics', async (_request, reply) => {
    return reply.header('content-type', registry.contentType).send(await registry.metrics())
  })
}
