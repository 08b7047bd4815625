/**
 * The URL table of the Nix binary cache protocol, in one place. Each GET route also answers HEAD
 * (Fastify's exposeHeadRoutes): Nix probes narinfos and NARs with HEAD, and a 405 there would
 * abort `nix copy`.
 *
 *   GET PUT  /nix-cache-info             routes/cache-info.ts
 *   GET PUT  /<hash32>.narinfo           routes/narinfo.ts
 *   GET PUT  /nar/<filehash52>.nar[.ext] routes/nar.ts
 *   GET PUT  /log/<drv>, /<hash32>.ls, /realisations/…, /build-trace-v2/…, /debuginfo/<id>
 *                                        routes/aux-files.ts
 *   GET      /healthz                    here: for load balancers and container checks
 *   POST     /api/v1/missing-paths       routes/batch.ts: the pusher's batched "what is missing?" (src/api/v1.ts)
 *   POST     /api/v1/upload-batch        routes/batch.ts: multipart NARs + narinfos, each verified like its PUT
 *   GET      /metrics                    server/metrics.ts: Prometheus
 *   GET      /, /search, /path/<hash32>  routes/pages.ts: the pages for people (HTML)
 */
import type { FastifyInstance } from 'fastify'
import { auxFileRoutes } from './aux-files.js'
import { batchRoutes } from './batch.js'
import { cacheInfoRoutes } from './cache-info.js'
import { narRoutes } from './nar.js'
import { narinfoRoutes } from './narinfo.js'
import { pageRoutes } from './pages.js'

export function registerRoutes (app: FastifyInstance): void {
  cacheInfoRoutes(app)
  narinfoRoutes(app)
  narRoutes(app)
  auxFileRoutes(app)
  pageRoutes(app)
  // A plugin of its own: @fastify/multipart's body parser must not reach the other routes.
  app.register(batchRoutes)
  app.get('/healthz', async (_request, reply) => reply.header('content-type', 'text/plain; charset=utf-8').send('ok\n'))
}
