/**
 * Turns every error into a short plain-text answer that names the rule. Nix prints the body of
 * a failed upload to the user, so 4xx bodies say what was wrong; 5xx bodies never carry details
 * (file paths, OS errors), which go to the log only.
 */
import type { FastifyError, FastifyInstance } from 'fastify'
import { isNarwhalError, type ErrorCode } from '../errors.js'

/**
 * Seconds a client is asked to wait when the object store cannot be reached: long enough for a
 * restarted service to come back, short enough that Nix's own retries still find it.
 */
export const STORAGE_RETRY_AFTER_SECONDS = 5

function fastifyStatus (err: FastifyError): number | undefined {
  if (err.validation !== undefined) return 400
  const status = err.statusCode
  return status !== undefined && status >= 400 && status < 500 ? status : undefined
}

/**
 * The code an error is answered with, and the reason a client is shown (undefined for a 5xx,
 * whose details go to the log only). The error handler below and the audit log share it.
 */
export function answerFor (err: FastifyError): { code: ErrorCode, reason: string | undefined } {
  if (isNarwhalError(err) && err.code !== 'NARWHAL_INTERNAL') return { code: err.code, reason: err.message }
  if (fastifyStatus(err) !== undefined) return { code: err.validation !== undefined ? 'NARWHAL_BAD_NAME' : 'NARWHAL_BAD_REQUEST', reason: err.message }
  return { code: 'NARWHAL_INTERNAL', reason: undefined }
}

export function registerErrorHandler (app: FastifyInstance): void {
  app.setErrorHandler((err: FastifyError, request, reply) => {
    reply.header('content-type', 'text/plain; charset=utf-8')
    // A refusal can come before the body was read (a NAR that is too large, in the wrong
    // compression, without a token). Closing the connection after the answer is the only way to
    // stop the upload; keeping it alive would leave an unread body blocking the socket.
    if (!request.raw.complete) reply.header('connection', 'close')
    // Every NarwhalError but NARWHAL_INTERNAL carries a message written for clients (507 included).
    // The object store is down: a 503 the client retries after a while. The reason names the
    // service's address and how it failed, for the log only.
    if (isNarwhalError(err) && err.code === 'NARWHAL_STORAGE_UNAVAILABLE') {
      request.log.warn({ code: err.code, reason: err.message }, 'object store unavailable')
      return reply.code(err.statusCode).header('retry-after', String(STORAGE_RETRY_AFTER_SECONDS))
        .send(`${err.code}: the cache's object store cannot be reached right now; retry in ${STORAGE_RETRY_AFTER_SECONDS} seconds\n`)
    }
    if (isNarwhalError(err) && err.code !== 'NARWHAL_INTERNAL') {
      // A miss is ordinary traffic (nix copy asks about every path of a closure), not a refusal;
      // a throttled client is logged once per window by server/rate-limit.ts, not per request.
      if (err.code === 'NARWHAL_NOT_FOUND') request.log.debug({ code: err.code, reason: err.message }, 'not found')
      else if (err.code === 'NARWHAL_RATE_LIMITED') request.log.debug({ code: err.code, reason: err.message }, 'throttled')
      else request.log.info({ code: err.code, reason: err.message }, 'request refused')
      // A collection of the same NAR ends within seconds: a retry then succeeds.
      if (err.code === 'NARWHAL_BUSY') reply.header('retry-after', '1')
      // The metadata database restarting or out of reach: the store retried for seconds already.
      if (err.code === 'NARWHAL_DATABASE_UNAVAILABLE') reply.header('retry-after', '5')
      return reply.code(err.statusCode).send(`${err.code}: ${err.message}\n`)
    }
    const clientStatus = fastifyStatus(err)
    if (clientStatus !== undefined) {
      const { code } = answerFor(err)
      request.log.info({ code, reason: err.message }, 'request refused')
      return reply.code(clientStatus).send(`${code}: ${err.message}\n`)
    }
    // The client closed the connection before its request was whole (Nix giving up on a retry, a
    // killed `nix copy`): ordinary traffic, and no one is left to answer. Error level is for our faults.
    if (!request.raw.complete && request.raw.socket.destroyed) {
      request.log.info({ reason: err.message }, 'client closed the connection before its request was complete')
      return reply.code(400).send('NARWHAL_BAD_REQUEST: the request ended before its body was complete\n')
    }
    request.log.error({ err }, 'internal error')
    return reply.code(500).send('NARWHAL_INTERNAL: internal error; the server log has the details\n')
  })

  app.setNotFoundHandler((request, reply) => {
    reply.code(404).header('content-type', 'text/plain; charset=utf-8')
      .send(`NARWHAL_NOT_FOUND: nothing is served at ${request.method} ${(request.url.split('?')[0] ?? '').slice(0, 200)}\n`)
  })
}
