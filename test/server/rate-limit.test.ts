/**
 * Rule: a client over its request budget gets 429 NARWHAL_RATE_LIMITED naming the budget, with a
 * Retry-After in seconds after which it is served again; other clients (another address, another
 * token) keep their own budgets. Hand-built requests: Nix never sends more than a few a second
 * on purpose, and these tests need exact counts (test/integration/rate-limit.test.ts has Nix).
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import http from 'node:http'
import { startServer, type TestServer } from '../helpers/server.js'
import { collect, freshNar, rowCounts, ruleOf, sleep, type Answer } from '../helpers/upload.js'

/** One request from a chosen loopback address (Linux routes all of 127/8 to lo). */
function from (server: TestServer, address: string, method: string, path: string,
  options: { token?: string, headers?: Record<string, string>, body?: string | Uint8Array } = {}): Promise<Answer> {
  const headers: Record<string, string> = { ...options.headers }
  if (options.token !== undefined) headers.authorization = `Bearer ${options.token}`
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: server.port, localAddress: address, method, path, headers, agent: false }, res => {
      collect(res).then(bytes => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: bytes.toString('utf8'), bytes }), reject)
    })
    req.on('error', reject)
    req.end(options.body)
  })
}

const CACHE_INFO_PUT = 'StoreDir: /nix/store\n'

async function refusals (server: TestServer): Promise<number> {
  const text = await (await fetch(`${server.url}/metrics`)).text()
  return Number(/narwhal_refusals_total\{code="NARWHAL_RATE_LIMITED"\} (\d+)/.exec(text)?.[1] ?? 0)
}

function retryAfterOf (answer: Answer): number {
  const value = Number(answer.headers['retry-after'])
  assert.ok(Number.isInteger(value), `Retry-After is whole seconds, got ${String(answer.headers['retry-after'])}`)
  return value
}

test('reads over rateLimit.reads: 429 with Retry-After and a body naming the limit; another address is not affected', async (t) => {
  // A long window, so that a slow machine cannot let it expire between the requests.
  const server = await startServer(t, { env: { NARWHAL_RATE_LIMIT_READS: '3', NARWHAL_RATE_LIMIT_WINDOW_SECONDS: '10' } })
  for (let i = 0; i < 3; i++) assert.equal((await from(server, '127.0.0.1', 'GET', '/nix-cache-info')).status, 200)
  const refused = await from(server, '127.0.0.1', 'HEAD', '/00000000000000000000000000000000.narinfo')
  assert.equal(refused.status, 429)
  const retryAfter = retryAfterOf(refused)
  assert.ok(retryAfter >= 1 && retryAfter <= 10, `Retry-After ${retryAfter} is within the 10 s window`)

  const body = await from(server, '127.0.0.1', 'GET', '/nix-cache-info')
  assert.equal(body.status, 429)
  assert.equal(ruleOf(body), 'NARWHAL_RATE_LIMITED')
  assert.match(body.body, /^NARWHAL_RATE_LIMITED: more than 3 reads \(GET\/HEAD\) from this address in 10 s \(rateLimit\.reads\); retry after \d+ s\n$/)

  assert.equal((await from(server, '127.0.0.2', 'GET', '/nix-cache-info')).status, 200, 'another address has its own budget')
  assert.equal((await from(server, '127.0.0.1', 'GET', '/healthz')).status, 200, '/healthz is never limited')
  assert.equal(await refusals(server), 2, 'both refusals are counted in the metrics')
})

test('the window resets: after Retry-After seconds the same client is served again', async (t) => {
  const server = await startServer(t, { env: { NARWHAL_RATE_LIMIT_READS: '2', NARWHAL_RATE_LIMIT_WINDOW_SECONDS: '2' } })
  let refused: Answer | undefined
  // Keep asking until refused: on a loaded machine a request may straddle a window boundary.
  for (let i = 0; i < 20 && refused === undefined; i++) {
    const answer = await from(server, '127.0.0.1', 'GET', '/nix-cache-info')
    if (answer.status === 429) refused = answer
    else assert.equal(answer.status, 200)
  }
  assert.ok(refused !== undefined, 'the third request in a window is refused')
  const retryAfter = retryAfterOf(refused)
  assert.ok(retryAfter >= 1 && retryAfter <= 2)
  await sleep(retryAfter * 1000 + 50)
  assert.equal((await from(server, '127.0.0.1', 'GET', '/nix-cache-info')).status, 200, 'a fresh window serves the client again')
})

test('writes are counted per token: a second token from the same address is not affected, and a refused NAR leaves nothing', async (t) => {
  const server = await startServer(t, { env: { NARWHAL_RATE_LIMIT_WRITES: '2', NARWHAL_RATE_LIMIT_WINDOW_SECONDS: '10' } })
  const first = await server.token('push')
  const second = await server.token('push')
  for (let i = 0; i < 2; i++) assert.equal((await from(server, '127.0.0.1', 'PUT', '/nix-cache-info', { token: first, body: CACHE_INFO_PUT })).status, 204)
  const nar = await freshNar('zstd')
  const refused = await from(server, '127.0.0.1', 'PUT', `/${nar.url}`, { token: first, body: nar.bytes })
  assert.equal(refused.status, 429)
  retryAfterOf(refused)
  assert.match(refused.body, /^NARWHAL_RATE_LIMITED: more than 2 writes \(PUT\/POST\) from token "test-push" in 10 s \(rateLimit\.writes\)/)
  assert.deepEqual(await server.storedFiles(), [])
  assert.deepEqual(await rowCounts(server), { narFiles: 0, narinfos: 0, refs: 0, auxFiles: 0 })

  const other = await from(server, '127.0.0.1', 'PUT', `/${nar.url}`, { token: second, body: nar.bytes })
  assert.equal(other.status, 201, `another token from the same address has its own budget: ${other.body}`)
  assert.equal((await from(server, '127.0.0.1', 'GET', `/${nar.url}`)).status, 200, 'reads are not limited by default')
})

test('a public cache counts a read with a valid token against the token, not the address', async (t) => {
  const server = await startServer(t, { env: { NARWHAL_RATE_LIMIT_READS: '2', NARWHAL_RATE_LIMIT_WINDOW_SECONDS: '10' } })
  const token = await server.token('read')
  for (let i = 0; i < 2; i++) assert.equal((await from(server, '127.0.0.1', 'GET', '/nix-cache-info')).status, 200)
  assert.equal((await from(server, '127.0.0.1', 'GET', '/nix-cache-info')).status, 429)
  // Nix sends netrc credentials as Basic; the token is the password.
  const basic = `Basic ${Buffer.from(`anyone:${token}`).toString('base64')}`
  assert.equal((await from(server, '127.0.0.1', 'GET', '/nix-cache-info', { headers: { authorization: basic } })).status, 200)
  assert.equal((await from(server, '127.0.0.1', 'GET', '/nix-cache-info', { token })).status, 200)
  const third = await from(server, '127.0.0.1', 'GET', '/nix-cache-info', { token })
  assert.equal(third.status, 429)
  assert.match(third.body, /from token "test-read"/)
  // An unknown token on a public read is no error, and no way around the address's budget.
  assert.equal((await from(server, '127.0.0.1', 'GET', '/nix-cache-info', { token: 'nw_not-a-token' })).status, 429)
})

test('failed authentication: past rateLimit.failedAuth bad tokens get 429, a valid token and a tokenless request still get their answers', async (t) => {
  const server = await startServer(t, { env: { NARWHAL_RATE_LIMIT_FAILED_AUTH: '2', NARWHAL_RATE_LIMIT_WINDOW_SECONDS: '10' } })
  for (let i = 0; i < 2; i++) {
    const answer = await from(server, '127.0.0.1', 'PUT', '/nix-cache-info', { token: `nw_guess-${i}`, body: CACHE_INFO_PUT })
    assert.equal(answer.status, 401)
    assert.equal(ruleOf(answer), 'NARWHAL_UNAUTHORIZED')
  }
  const refused = await from(server, '127.0.0.1', 'PUT', '/nix-cache-info', { token: 'nw_guess-2', body: CACHE_INFO_PUT })
  assert.equal(refused.status, 429)
  retryAfterOf(refused)
  assert.equal(refused.headers['www-authenticate'], undefined)
  assert.match(refused.body, /^NARWHAL_RATE_LIMITED: more than 2 requests with an unknown, revoked or expired token from this address in 10 s \(rateLimit\.failedAuth\)/)

  assert.equal((await from(server, '127.0.0.1', 'PUT', '/nix-cache-info', { token: (await server.token('push')), body: CACHE_INFO_PUT })).status, 204,
    'a valid token from the same address is served')
  const anonymous = await from(server, '127.0.0.1', 'PUT', '/nix-cache-info', { body: CACHE_INFO_PUT })
  assert.equal(anonymous.status, 401, 'no credentials is not a failed authentication: Nix reads that 401 as "not in this cache"')
  assert.equal((await from(server, '127.0.0.2', 'PUT', '/nix-cache-info', { token: 'nw_guess-3', body: CACHE_INFO_PUT })).status, 401,
    'another address has its own budget')
})

test('trustProxy: behind a trusted proxy the client is X-Forwarded-For; without it the header changes nothing', async (t) => {
  const env = { NARWHAL_RATE_LIMIT_READS: '1', NARWHAL_RATE_LIMIT_WINDOW_SECONDS: '10' }
  const direct = await startServer(t, { env })
  const forwarded = (address: string): { headers: Record<string, string> } => ({ headers: { 'x-forwarded-for': address } })
  assert.equal((await from(direct, '127.0.0.1', 'GET', '/nix-cache-info', forwarded('198.51.100.1'))).status, 200)
  assert.equal((await from(direct, '127.0.0.1', 'GET', '/nix-cache-info', forwarded('198.51.100.2'))).status, 429,
    'a client cannot pick the address it is counted under')

  const proxied = await startServer(t, { env: { ...env, NARWHAL_TRUST_PROXY: '127.0.0.1' } })
  assert.equal((await from(proxied, '127.0.0.1', 'GET', '/nix-cache-info', forwarded('198.51.100.1'))).status, 200)
  assert.equal((await from(proxied, '127.0.0.1', 'GET', '/nix-cache-info', forwarded('198.51.100.2'))).status, 200,
    'two clients behind the proxy have a budget each')
  assert.equal((await from(proxied, '127.0.0.1', 'GET', '/nix-cache-info', forwarded('198.51.100.1'))).status, 429)
  assert.equal((await from(proxied, '127.0.0.2', 'GET', '/nix-cache-info', forwarded('198.51.100.3'))).status, 200)
  assert.equal((await from(proxied, '127.0.0.2', 'GET', '/nix-cache-info', forwarded('198.51.100.4'))).status, 429,
    'an address that is not the proxy is counted as itself, whatever it forwards')
})

test('defaults: reads and writes are not limited; NARWHAL_RATE_LIMIT=false turns every budget off', async (t) => {
  const server = await startServer(t)
  const answers = await Promise.all(Array.from({ length: 300 }, async () => (await fetch(`${server.url}/nix-cache-info`)).status))
  assert.deepEqual(new Set(answers), new Set([200]))
  const token = await server.token('push')
  const writes = await Promise.all(Array.from({ length: 100 }, async () =>
    (await fetch(`${server.url}/nix-cache-info`, { method: 'PUT', body: CACHE_INFO_PUT, headers: { authorization: `Bearer ${token}` } })).status))
  assert.deepEqual(new Set(writes), new Set([204]))

  const off = await startServer(t, { env: { NARWHAL_RATE_LIMIT: 'false', NARWHAL_RATE_LIMIT_WRITES: '1', NARWHAL_RATE_LIMIT_FAILED_AUTH: '1' } })
  const offToken = await off.token('push')
  for (let i = 0; i < 3; i++) {
    assert.equal((await from(off, '127.0.0.1', 'PUT', '/nix-cache-info', { token: offToken, body: CACHE_INFO_PUT })).status, 204)
    assert.equal((await from(off, '127.0.0.1', 'PUT', '/nix-cache-info', { token: 'nw_guess', body: CACHE_INFO_PUT })).status, 401)
  }
})
