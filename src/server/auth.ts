/**
 * Who may do what. Writes (PUT) need a token with push scope; reads need a read token only when
 * the cache is configured private. Tokens are looked up on every request (cache/tokens.ts), so a
 * token created or revoked with `narwhal token …` takes effect at once, without a restart.
 *
 * The check is attached to the routes that need it (server/route-hooks.ts); a request for a URL
 * no route serves gets its 404 without one.
 *
 * The token a request was let in with is kept on it (request.narwhalToken), so the rate limit
 * counts the request against that token rather than against its address.
 */
import type { FastifyInstance, FastifyRequest, RouteOptions } from 'fastify'
import { scopeAllows, tokenFromAuthorization, type Scope } from '../auth/tokens.js'
import { liveToken, type TokenRow } from '../cache/tokens.js'
import { NarwhalError } from '../errors.js'
import type { CacheContext } from './context.js'
import { isWriteMethod, onRouteHook, routeMethods } from './route-hooks.js'

declare module 'fastify' {
  interface FastifyRequest {
    /** The live token the request presented: undefined until looked up, null when it has none. */
    narwhalToken: TokenRow | null | undefined
  }
}

function neededScope (request: FastifyRequest, isPrivate: boolean): Scope | undefined {
  if (request.method === 'GET' || request.method === 'HEAD') return isPrivate ? 'read' : undefined
  return 'push'
}

/**
 * The live token a request presents, looked up at most once per request. For requests that need
 * no token (reads of a public cache) this is only asked when a read budget is set: Nix sends its
 * netrc credentials with every request, so a team's clients can be counted apart even there.
 */
export async function presentedToken (request: FastifyRequest, metadata: CacheContext['metadata']): Promise<TokenRow | null> {
  if (request.narwhalToken === undefined) {
    const token = tokenFromAuthorization(request.headers.authorization)
    request.narwhalToken = token === undefined ? null : await liveToken(metadata, token) ?? null
  }
  return request.narwhalToken
}

export function registerAuth (app: FastifyInstance): void {
  app.decorateRequest('narwhalToken', undefined)

  // Only on routes where some method needs a scope: reads of a public cache skip the hook.
  const isPrivate = app.narwhal.config.private
  const needsToken = (route: RouteOptions): boolean => isPrivate || routeMethods(route).some(isWriteMethod)
  onRouteHook(app, 'onRequest', needsToken, async (request, reply) => {
    const needed = neededScope(request, app.narwhal.config.private)
    if (needed === undefined) return
    const token = tokenFromAuthorization(request.headers.authorization)
    if (token === undefined) {
      reply.header('www-authenticate', 'Basic realm="narwhal"')
      throw new NarwhalError('NARWHAL_UNAUTHORIZED', `this request needs a token with ${needed} scope ` +
        '(Authorization: Bearer TOKEN, or TOKEN as the password in a netrc file)')
    }
    const row = await liveToken(app.narwhal.metadata, token)
    request.narwhalToken = row ?? null
    if (row === undefined) {
      // Counted per address; past rateLimit.failedAuth in a window this throws 429 instead
      // (rate-limit.ts). A request without credentials is not counted: Nix 2.8 reads its 401 as
      // "not in this cache", which is how an anonymous client of a private cache must go on seeing it.
      await app.countFailedAuth(request, reply)
      reply.header('www-authenticate', 'Basic realm="narwhal"')
      throw new NarwhalError('NARWHAL_UNAUTHORIZED', 'the token is unknown, revoked or expired')
    }
    if (!scopeAllows(row.scope, needed)) {
      throw new NarwhalError('NARWHAL_FORBIDDEN', `the token "${row.name}" has ${row.scope} scope; this request needs ${needed}`)
    }
  })
}
