/**
 * Per-route hooks (server/route-hooks.ts): a hook reaches only the routes it applies to, runs
 * after the route's own hooks, and hooks attached in order run in that order. Then, on the real
 * app: reads of a public cache run no auth, rate-limit or idle-timeout hook, and writes run all
 * that apply, in order.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import Fastify, { type FastifyInstance } from 'fastify'
import { isWriteMethod, onRouteHook, routeMethods } from '../../src/server/route-hooks.js'
import { startServer } from '../helpers/server.js'

test('onRouteHook attaches a hook only to the routes it applies to, in order, after their own hooks', async () => {
  const app: FastifyInstance = Fastify()
  const seen: string[] = []
  const writes = (route: Parameters<typeof routeMethods>[0]): boolean => routeMethods(route).some(isWriteMethod)
  onRouteHook(app, 'onRequest', writes, async () => { seen.push('first') })
  onRouteHook(app, 'onRequest', writes, async () => { seen.push('second') })
  app.get('/read', async () => 'r')
  app.put('/write', { onRequest: async () => { seen.push('own') } }, async () => 'w')
  app.route({ method: ['GET', 'POST'], url: '/both', handler: async () => 'b' })

  await app.inject({ method: 'GET', url: '/read' })
  assert.deepEqual(seen, [], 'a read-only route carries no write hook')
  await app.inject({ method: 'PUT', url: '/write', payload: 'x' })
  assert.deepEqual(seen, ['own', 'first', 'second'])
  seen.length = 0
  await app.inject({ method: 'GET', url: '/both' })
  assert.deepEqual(seen, ['first', 'second'], 'a route with any write method gets the hook for all its methods')
  await app.close()
})

test('on a public cache a read is answered without auth; a write still needs a token', async (t) => {
  const server = await startServer(t)
  const bad = { authorization: 'Bearer nw_not-a-token' }
  // An unknown token on a read of a public cache is ignored, as before: nothing checks it.
  assert.equal((await fetch(`${server.url}/nix-cache-info`, { headers: bad })).status, 200)
  assert.equal((await fetch(`${server.url}/00000000000000000000000000000000.narinfo`, { headers: bad })).status, 404)
  const put = await fetch(`${server.url}/00000000000000000000000000000000.narinfo`, { method: 'PUT', body: 'x', headers: bad })
  assert.equal(put.status, 401)
  assert.match(await put.text(), /NARWHAL_UNAUTHORIZED/)
})
