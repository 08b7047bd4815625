/**
 * buildApp(): the Fastify instance that serves one cache. It never listens; `narwhal serve`
 * (src/cli/commands/serve.ts) does, and tests use inject() or listen on port 0.
 */
import Fastify, { LogController, type FastifyInstance } from 'fastify'
import { AccessTracker } from '../cache/access-tracker.js'
import http, { type IncomingMessage, type ServerResponse } from 'node:http'
import { registerAudit } from './audit.js'
import { registerAuth } from './auth.js'
import { holdContinue } from './body.js'
import type { CacheContext } from './context.js'
import { registerErrorHandler } from './error-handler.js'
import { fastReads, type FastRead } from './fast-reads.js'
import { idleTimeoutMs, registerIdleTimeout } from './idle-timeout.js'
import { registerMetrics } from './metrics.js'
import { registerRateLimit } from './rate-limit.js'
import { registerRoutes } from './routes/index.js'

export interface AppOptions {
  /** Pino logging; false silences it (tests). */
  logger?: boolean
  /**
   * True in a worker of `narwhal serve --workers N` (cli/cluster-worker.ts): /metrics then
   * reports all workers together, gathered through the primary (server/cluster-metrics.ts).
   */
  clusterWorker?: boolean
}

export function buildApp (context: Omit<CacheContext, 'access'>, options: AppOptions = {}): FastifyInstance {
  const { timeouts, trustProxy } = context.config
  const headersMs = timeouts.headersSeconds * 1000
  // A NAR upload can take many minutes: no limit on a request's total time. What is limited is
  // silence: a socket on which no byte moved either way for timeouts.idleSeconds is destroyed
  // (Node's socket timeout), which stops a stalled upload (its temp file is then removed, see
  // storage/nar-ingest.ts) and a download to a client that stopped reading. The server's own
  // work is not silence: see idle-timeout.ts.
  const requestTimeout = 0
  const connectionTimeout = idleTimeoutMs(context.config)
  const keepAliveTimeout = 65_000
  const httpOptions = {
    // Headers trickled a byte at a time keep a socket busy but never start a request (slowloris).
    headersTimeout: headersMs,
    // How often Node checks headersTimeout; its default of 30 s would let a slow header live
    // up to 30 s past its limit. One pass over the open connections per second costs nothing.
    connectionsCheckingInterval: Math.min(1000, headersMs / 2)
  }
  // Set once the routes exist (below); the server is made before them.
  const front: { fastRead?: FastRead } = {}
  const app = Fastify({
    // The server Fastify would make (lib/server.js applies these same settings to it), with the
    // frequent reads that fast-reads.ts answers taken off the front.
    serverFactory: (handler) => {
      const server = http.createServer(httpOptions, (request, response) => {
        if (front.fastRead?.(request, response) !== true) handler(request, response)
      })
      server.keepAliveTimeout = keepAliveTimeout
      server.requestTimeout = requestTimeout
      server.setTimeout(connectionTimeout)
      return server
    },
    logger: options.logger === false ? false : { level: context.config.logLevel },
    // Nix 2.8 strips only one trailing slash from the cache URL, so `…/cache//x` does arrive.
    routerOptions: { ignoreDuplicateSlashes: true },
    requestTimeout,
    connectionTimeout,
    keepAliveTimeout,
    http: httpOptions,
    // Behind a reverse proxy every client would otherwise count as the proxy's address.
    trustProxy: trustProxy.length > 0 ? trustProxy : false,
    return503OnClosing: true,
    // One log line per read would cost more than the read itself (a narinfo hit is answered from
    // memory); writes, refusals and errors are logged at info, every request at debug.
    logController: new LogController({ disableRequestLogging: true })
  })
  const access = new AccessTracker(context.metadata.retention, { onError: err => app.log.warn({ err }, 'could not record read times for gc') })
  app.decorate('narwhal', { ...context, access })
  // Read times still pending are written before the caller closes the database.
  app.addHook('onClose', async () => {
    await access.close()
    await context.audit.close()
  })
  // Answer `Expect: 100-continue` only once a route decides to read the body (body.ts acceptBody),
  // so a refused upload gets its final status without being invited to send gigabytes first.
  app.server.on('checkContinue', (request: IncomingMessage, response: ServerResponse) => {
    holdContinue(request, response)
    app.server.emit('request', request, response)
  })
  // Every body is read by its route with a limit for its kind (NARs stream, never buffered), so
  // Fastify's own parsers, and its 1 MiB bodyLimit, are replaced by one that reads nothing.
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('*', (_request, _payload, done) => { done(null) })
  if (context.config.logLevel === 'debug' || context.config.logLevel === 'trace') {
    app.addHook('onResponse', async (request, reply) => {
      request.log.debug({ method: request.method, url: request.url, status: reply.statusCode, ms: reply.elapsedTime }, 'request')
    })
  }
  registerErrorHandler(app)
  registerIdleTimeout(app, connectionTimeout)
  registerAuth(app)
  registerRateLimit(app)
  const countResponse = registerMetrics(app, { cluster: options.clusterWorker ?? false })
  registerAudit(app)
  registerRoutes(app)
  front.fastRead = fastReads(app, countResponse)
  return app
}
