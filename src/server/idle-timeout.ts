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
 */
import type { FastifyInstance, RouteOptions } from 'fastify'
import type { Socket } from 'node:net'
import { isWriteMethod, onRouteHook, routeMethods } from './route-hooks.js'

/** app.inject() (tests) hands routes a stand-in socket without timers. */
function setIdleTimeout (socket: { setTimeout?: unknown }, ms: number): void {
  if (typeof socket.setTimeout === 'function') (socket as Socket).setTimeout(ms)
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
