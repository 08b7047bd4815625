/**
 * Per-client request budgets (config `rateLimit`), refused with 429 NARWHAL_RATE_LIMITED and a
 * `Retry-After` in whole seconds.
 *
 * Three budgets, each counted in fixed windows of `rateLimit.windowSeconds`:
 *   reads       GET/HEAD, per client          (default unlimited)
 *   writes      PUT/POST, per client          (default unlimited)
 *   failedAuth  requests whose token is unknown, revoked or expired, per address (default 30);
 *               past it they get 429 instead of 401 (counted in server/auth.ts)
 * A client is its token when it presents a live one, else its address (server/client-key.ts).
 * /healthz and /metrics are never limited: load balancers and Prometheus poll them.
 *
 * Nix 2.8 retries a 429 four times, 250 ms · 2^n apart with jitter (about 4.6 s in all), and
 * ignores Retry-After; with one-second windows a throttled download gets through on a retry.
 * A retried upload is re-sent from where the first attempt stopped reading its buffer (fixed
 * upstream in 2026, NixOS/nix#15047); it works here only because curl waits for `100 Continue`
 * and the 429 is sent instead (server/body.ts), before any byte of the body was read.
 *
 * The counters are @fastify/rate-limit's in-memory LRU store: they belong to this process, so
 * with `workers: N` each worker grants the whole budget (said so in the README).
 */
import fastifyRateLimit, { type RateLimitOptions } from '@fastify/rate-limit'
import type { FastifyInstance, FastifyReply, FastifyRequest, RouteOptions } from 'fastify'
import type { RateLimit } from '../config/config.js'
import { NarwhalError } from '../errors.js'
import { presentedToken } from './auth.js'
import { addressKey, tokenKey } from './client-key.js'
import { isWriteMethod, onRouteHook, routeMethods } from './route-hooks.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** Counts a request whose token was refused; throws NARWHAL_RATE_LIMITED past the budget. */
    countFailedAuth: (request: FastifyRequest, reply: FastifyReply) => Promise<void>
  }
}

/** Clients remembered per budget; the least recently seen is forgotten first (its count restarts). */
const CLIENTS_REMEMBERED = 10_000
const UNLIMITED_ROUTES = new Set(['/healthz', '/metrics'])

type Limiter = ReturnType<FastifyInstance['createRateLimit']>
type Budget = 'reads' | 'writes' | 'failedAuth'

const WHAT: Record<Budget, string> = {
  reads: 'reads (GET/HEAD)',
  writes: 'writes (PUT/POST)',
  failedAuth: 'requests with an unknown, revoked or expired token'
}

async function clientKey (request: FastifyRequest, app: FastifyInstance): Promise<string> {
  const token = await presentedToken(request, app.narwhal.metadata)
  return token === null ? addressKey(request.ip) : tokenKey(token.id)
}

function clientName (request: FastifyRequest): string {
  const token = request.narwhalToken
  return token === null || token === undefined ? 'this address' : `token "${token.name}"`
}

export function registerRateLimit (app: FastifyInstance): void {
  const settings: RateLimit = app.narwhal.config.rateLimit
  const budgetOf = (budget: Budget): number => settings.enabled ? settings[budget] : 0
  if (budgetOf('reads') === 0 && budgetOf('writes') === 0 && budgetOf('failedAuth') === 0) {
    app.decorate('countFailedAuth', async () => {})
    return
  }

  // global: false, so the plugin adds no hooks of its own; the limiters are made below.
  app.register(fastifyRateLimit, { global: false })
  const limiters = new Map<Budget, Limiter>()
  app.after(() => {
    for (const budget of ['reads', 'writes', 'failedAuth'] as const) {
      if (budgetOf(budget) === 0) continue
      const options: RateLimitOptions = {
        max: budgetOf(budget),
        timeWindow: settings.windowSeconds * 1000,
        cache: CLIENTS_REMEMBERED,
        keyGenerator: budget === 'failedAuth' ? request => addressKey(request.ip) : async request => await clientKey(request, app)
      }
      limiters.set(budget, app.createRateLimit(options))
    }
  })

  // One log line per client and window, not one per refused request: a flood must not flood the log.
  const loggedUntil = new Map<string, number>()

  async function check (budget: Budget, request: FastifyRequest, reply: FastifyReply): Promise<void> {
    const limiter = limiters.get(budget)
    if (limiter === undefined) return
    const result = await limiter(request)
    if (result.isAllowed || !result.isExceeded) return
    const retryAfter = Math.max(1, result.ttlInSeconds)
    const now = Date.now()
    const logKey = `${budget} ${result.key}`
    if ((loggedUntil.get(logKey) ?? 0) <= now) {
      if (loggedUntil.size >= CLIENTS_REMEMBERED) loggedUntil.clear()
      loggedUntil.set(logKey, now + result.ttl)
      request.log.info({ code: 'NARWHAL_RATE_LIMITED', budget, client: result.key, max: result.max }, 'client over its request budget')
    }
    reply.header('retry-after', String(retryAfter))
    throw new NarwhalError('NARWHAL_RATE_LIMITED', `more than ${result.max} ${WHAT[budget]} from ${clientName(request)} ` +
      `in ${settings.windowSeconds} s (rateLimit.${budget}); retry after ${retryAfter} s`)
  }

  app.decorate('countFailedAuth', async (request: FastifyRequest, reply: FastifyReply) => {
    await check('failedAuth', request, reply)
  })

  // Only on routes with a budget for one of their methods (by default none: reads and writes are
  // unlimited, and the failed-auth budget is counted from server/auth.ts). Attached after
  // server/auth.ts's hook, so a token the request was let in with is known.
  const counted = (route: RouteOptions): boolean => !UNLIMITED_ROUTES.has(route.url) &&
    routeMethods(route).some(m => budgetOf(isWriteMethod(m) ? 'writes' : 'reads') > 0)
  onRouteHook(app, 'onRequest', counted, async (request, reply) => {
    await check(isWriteMethod(request.method) ? 'writes' : 'reads', request, reply)
  })
}
