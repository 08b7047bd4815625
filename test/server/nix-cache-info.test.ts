/**
 * Rule (fact sheet §2, §13.5-6): `nix-cache-info` always exists and is right the first time
 * (Nix 2.8 never re-reads it): StoreDir /nix/store, WantMassQuery 1, the configured Priority
 * (30 by default). A PUT with the same StoreDir succeeds and changes nothing; another StoreDir is
 * refused. `//nix-cache-info` (what Nix 2.8 asks for when the URL ends in `//`) works the same.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { startServer } from '../helpers/server.js'
import { get, put, request, ruleOf } from '../helpers/upload.js'

const DEFAULT_INFO = 'StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 30\n'

test('GET nix-cache-info: StoreDir, WantMassQuery 1, Priority 30', async (t) => {
  const server = await startServer(t)
  const answer = await get(`${server.url}/nix-cache-info`)
  assert.equal(answer.status, 200)
  assert.equal(answer.body, DEFAULT_INFO)
  assert.equal(answer.headers['content-type'], 'text/x-nix-cache-info')
})

test('the configured priority is the one served', async (t) => {
  const server = await startServer(t, { env: { NARWHAL_PRIORITY: '45' } })
  assert.equal((await get(`${server.url}/nix-cache-info`)).body, 'StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 45\n')
})

test('//nix-cache-info and //<hash>.narinfo are served as if the slash were single', async (t) => {
  const server = await startServer(t)
  const answer = await request(server, 'GET', '//nix-cache-info')
  assert.equal(answer.status, 200)
  assert.equal(answer.body, DEFAULT_INFO)
  const missing = await request(server, 'GET', '//0123456789abcdfghijklmnpqrsvwxyz.narinfo')
  assert.equal(missing.status, 404)
  assert.equal(ruleOf(missing), 'NARWHAL_NOT_FOUND')
})

test('PUT nix-cache-info with the same StoreDir: 2xx, and nothing changes', async (t) => {
  const server = await startServer(t)
  const token = await server.token('push')
  const answer = await put(`${server.url}/nix-cache-info`, 'StoreDir: /nix/store\nWantMassQuery: 0\nPriority: 99\n', token,
    { 'content-type': 'text/x-nix-cache-info' })
  assert.ok(answer.status >= 200 && answer.status < 300, `${answer.status} ${answer.body}`)
  assert.equal((await get(`${server.url}/nix-cache-info`)).body, DEFAULT_INFO)
})

test('PUT nix-cache-info with another StoreDir: 400 naming the store dir', async (t) => {
  const server = await startServer(t)
  const answer = await put(`${server.url}/nix-cache-info`, 'StoreDir: /gnu/store\nWantMassQuery: 1\n', (await server.token('push')))
  assert.equal(answer.status, 400)
  assert.equal(answer.body, 'NARWHAL_BAD_REQUEST: nix-cache-info: this cache is for StoreDir /nix/store, not /gnu/store\n')
  assert.equal((await get(`${server.url}/nix-cache-info`)).body, DEFAULT_INFO)
})

test('PUT nix-cache-info without a token: 401', async (t) => {
  const server = await startServer(t)
  const answer = await put(`${server.url}/nix-cache-info`, 'StoreDir: /nix/store\n')
  assert.equal(answer.status, 401)
  assert.equal(ruleOf(answer), 'NARWHAL_UNAUTHORIZED')
})
