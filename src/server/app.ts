/**
 * buildApp(): the Fastify instance that serves one cache. It never listens; `narwhal serve`
 * (src/cli/commands/serve.ts) does, and tests use inject() or listen on port 0.
 */
import Fastify, { LogController, type FastifyInstance } from 'fastify'
import { AccessTracker } from '../cache/access-tracker.js'
import { registerAuth } from './auth.js'
import type { CacheContext } from './context.js'
import { registerErrorHandler } from './error-handler.js'
import { registerMetrics } from './metrics.js'
import { registerRoutes } from './routes/index.js'

export interface AppOptions {
  /** Pino logging; false silences it (tests). */
  logger?: boolean
}

export function buildApp (context: Omit<CacheContext, 'access'>, options: AppOptions = {}): FastifyInstance {
  const app = Fastify({
    logger: options.logger === false ? false : { level: context.config.logLevel },
    // Nix 2.8 strips only one trailing slash from the cache URL, so `…/cache//x` does arrive.
    routerOptions: { ignoreDuplicateSlashes: true },
    // A NAR upload can take many minutes; the limits are on bytes, not on time.
    requestTimeout: 0,
    connectionTimeout: 0,
    keepAliveTimeout: 65_000,
    return503OnClosing: true,
    // One log line per read would cost more than the read itself (a narinfo hit is one indexed
    // lookup); writes, refusals and errors are logged at info, every request at debug.
    logController: new LogController({ disableRequestLogging: true })
  })
  const access = new AccessTracker(context.retention, { onError: err => app.log.warn({ err }, 'could not record read times for gc') })
  app.decorate('narwhal', { ...context, access })
  // Read times still pending are written before the caller closes the database.
  app.addHook('onClose', async () => { access.close() })
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
  registerAuth(app)
  registerMetrics(app)
  registerRoutes(app)
  return app
}
