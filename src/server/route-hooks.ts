/**
 * Attaching a hook to the routes it concerns instead of to every request.
 *
 * A hook added with app.addHook runs for every request, and each one is a function call, a
 * promise and a microtask on the hot path. Most of narwhal's hooks concern only some routes: the
 * idle-timeout suspension only requests with a body, auth only writes (and reads of a private
 * cache), a request budget only the methods it counts. On a narinfo hit, global hooks cost
 * about as much server CPU as the route itself (BENCHMARKS.md, 2026-11-30).
 *
 * onRouteHook(app, 'onRequest', applies, hook) adds `hook` to each route, registered after this
 * call, whose methods satisfy `applies`, after the route's own hooks of that kind. Hooks attached
 * in registration order run in that order (auth before the rate limit, which counts by token).
 */
import type { FastifyInstance, HTTPMethods, onRequestAsyncHookHandler, onSendAsyncHookHandler, RouteOptions } from 'fastify'

interface RouteHooks {
  onRequest: onRequestAsyncHookHandler
  onSend: onSendAsyncHookHandler
}

export type RouteHookName = keyof RouteHooks

/** The methods a route answers, upper case. */
export function routeMethods (route: RouteOptions): HTTPMethods[] {
  const methods = Array.isArray(route.method) ? route.method : [route.method]
  return methods.map(m => m.toUpperCase() as HTTPMethods)
}

/** True for methods that carry a request body narwhal reads (uploads and the batch API). */
export function isWriteMethod (method: string): boolean {
  return method !== 'GET' && method !== 'HEAD'
}

export function onRouteHook<K extends RouteHookName> (app: FastifyInstance, name: K,
  applies: (route: RouteOptions) => boolean, hook: RouteHooks[K]): void {
  app.addHook('onRoute', (route) => {
    if (!applies(route)) return
    const existing = route[name] as RouteHooks[K] | Array<RouteHooks[K]> | undefined
    const list = existing === undefined ? [] : Array.isArray(existing) ? existing : [existing]
    ;(route as unknown as Record<string, unknown>)[name] = [...list, hook]
  })
}
