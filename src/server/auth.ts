/**
 * Who may do what. Writes (PUT) need a token with push scope; reads need a read token only when
 * the cache is configured private. Tokens are looked up in SQLite on every request, so a token
 * created or revoked with `narwhal token …` takes effect at once, without a restart.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify'
import { hashToken, scopeAllows, tokenFromAuthorization, type Scope } from '../auth/tokens.js'
import { NarwhalError } from '../errors.js'

function neededScope (request: FastifyRequest, isPrivate: boolean): Scope | undefined {
  if (request.method === 'GET' || request.method === 'HEAD') return isPrivate ? 'read' : undefined
  return 'push'
}

export function registerAuth (app: FastifyInstance): void {
  app.addHook('onRequest', async (request, reply) => {
    const needed = neededScope(request, app.narwhal.config.private)
    if (needed === undefined) return
    const token = tokenFromAuthorization(request.headers.authorization)
    if (token === undefined) {
      reply.header('www-authenticate', 'Basic realm="narwhal"')
      throw new NarwhalError('NARWHAL_UNAUTHORIZED', `this request needs a token with ${needed} scope ` +
        '(Authorization: Bearer TOKEN, or TOKEN as the password in a netrc file)')
    }
    const row = app.narwhal.metadata.tokenByHash(hashToken(token))
    const now = Date.now()
    if (row === undefined || row.revokedAt !== null || (row.expiresAt !== null && row.expiresAt <= now)) {
      reply.header('www-authenticate', 'Basic realm="narwhal"')
      throw new NarwhalError('NARWHAL_UNAUTHORIZED', 'the token is unknown, revoked or expired')
    }
    if (!scopeAllows(row.scope, needed)) {
      throw new NarwhalError('NARWHAL_FORBIDDEN', `the token "${row.name}" has ${row.scope} scope; this request needs ${needed}`)
    }
  })
}
