/**
 * The idle timeout (timeouts.idleSeconds, Node's socket timeout) measures the client's silence,
 * not the server's work. Once a request's body has been read to its end, the server may work for
 * a long time with no byte moving: fsync of a multi-GiB NAR flushes what the page cache held back,
 * which on a slow disk takes a minute. So the timeout is suspended from the body's last byte until
 * the answer starts, and restored for the answer's bytes (a download to a client that stops
 * reading is still cut off).
 *
 * Only routes that read a body (PUT, POST) get these hooks: a GET has no body to wait for, and a
 * hook on every read would cost the hot path for nothing.
 *
 * The same holds in the middle of a body: a route that streams one (a NAR upload) reads it through
 * clientPaced, so the timeout runs while the server waits for the client's next bytes, not while
 * it works on the bytes it has and so reads nothing (a bzip2 upload waiting for a decoder thread
 * while others decode, a slow disk).
 */
import type { FastifyInstance, RouteOptions } from 'fastify'
import type { IncomingMessage } from 'node:http'
import type { Socket } from 'node:net'
import type { Config } from '../config/config.js'
import { isWriteMethod, onRouteHook, routeMethods } from './route-hooks.js'

/** timeouts.idleSeconds in the milliseconds Node's timers take. */
export function idleTimeoutMs (config: Readonly<Pick<Config, 'timeouts'>>): number {
  return config.timeouts.idleSeconds * 1000
}

/** Sets the socket's idle timeout (0: none); app.inject() (tests) hands a socket without timers. */
function setIdleTimeout (socket: { setTimeout?: unknown }, ms: number): void {
  if (typeof socket.setTimeout === 'function') (socket as Socket).setTimeout(ms)
}

/**
 * `body` (a request's bytes, or one part of them) read with the request's idle timeout running
 * only while the server waits for bytes the client has yet to send: suspended from the moment a
 * chunk is handed over until the server asks for the next, and not armed again once the whole
 * request has arrived (what follows is the server's work, as after the body above).
 */
export function clientPaced (body: AsyncIterable<Buffer>, request: IncomingMessage, idleMs: number): AsyncIterable<Buffer> {
  return {
    [Symbol.asyncIterator]: () => {
      const chunks = body[Symbol.asyncIterator]()
      return {
        next: async () => {
          awaitClient(request, idleMs)
          const next = await chunks.next()
          if (next.done !== true) setIdleTimeout(request.socket, 0)
          return next
        },
        return: async (value?: unknown) => {
          awaitClient(request, idleMs)
          return await (chunks.return?.(value) ?? Promise.resolve({ done: true as const, value: undefined }))
        }
      }
    }
  }
}

/** Arms the idle timeout while part of the request has yet to arrive (a refused body's rest). */
export function awaitClient (request: IncomingMessage, idleMs: number): void {
  if (!request.complete) setIdleTimeout(request.socket, idleMs)
}

export function registerIdleTimeout (app: FastifyInstance, idleMs: number): void {
  const readsBody = (route: RouteOptions): boolean => routeMethods(route).some(isWriteMethod)
  onRouteHook(app, 'onRequest', readsBody, async (request) => {
    const socket = request.raw.socket
    // 'end' is only emitted for a body that was read whole; a refused upload keeps the timeout.
    request.raw.once('end', () => setIdleTimeout(socket, 0))
  })
  onRouteHook(app, 'onSend', readsBody, async (request, _reply, payload) => {
    setIdleTimeout(request.raw.socket, idleMs)
    return payload
  })
}
