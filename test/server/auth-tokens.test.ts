/**
 * Rule: every write needs a live token with push scope, sent as `Authorization: Bearer TOKEN` or
 * as the password of HTTP Basic (any user name: that is what Nix sends from a netrc file). A
 * missing, unknown, revoked or expired token is 401 with a WWW-Authenticate challenge; a read
 * token on a write is 403. Tokens are looked up on every request, so `narwhal token revoke` takes
 * effect at once on a running server. A private cache needs a read token for reads as well.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { fileURLToPath } from 'node:url'
import { generateToken, hashToken } from '../../src/auth/tokens.js'
import { backendFor } from '../helpers/backend.js'
import { runOk } from '../helpers/nix.js'
import { startServer, type TestServer } from '../helpers/server.js'
import { freshNar, get, put, request, rowCounts, ruleOf, sleep, type Answer, type Nar } from '../helpers/upload.js'

const CLI = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url))

function basic (user: string, password: string): string {
  return `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`
}

async function putNar (server: TestServer, nar: Nar, authorization?: string): Promise<Answer> {
  return await put(`${server.url}/${nar.url}`, nar.bytes, undefined, authorization === undefined ? {} : { authorization })
}

function assertUnauthorized (answer: Answer, message: RegExp): void {
  assert.equal(answer.status, 401, answer.body)
  assert.equal(ruleOf(answer), 'NARWHAL_UNAUTHORIZED')
  assert.match(answer.body, message)
  assert.equal(answer.headers['www-authenticate'], 'Basic realm="narwhal"')
}

async function insertToken (server: TestServer, scope: 'read' | 'push' | 'admin', expiresAt: number | null): Promise<string> {
  const token = generateToken()
  await (server.cache.metadata.tokens.insert({ name: `test-${scope}-expiring`, scope, tokenHash: hashToken(token), expiresAt }, Date.now()))
  return token
}

test('a push token as Bearer, or as the Basic password under any user name, may write', async (t) => {
  const server = await startServer(t)
  const token = await server.token('push')
  const ways = [`Bearer ${token}`, `bearer ${token}`, basic('narwhal', token), basic('anyone-at-all', token), basic('', token)]
  for (const authorization of ways) {
    const nar = await freshNar('zstd')
    const answer = await putNar(server, nar, authorization)
    assert.equal(answer.status, 201, `${authorization.split(' ')[0] ?? ''}: ${answer.body}`)
  }
  assert.equal((await rowCounts(server)).narFiles, ways.length)
  // An admin token includes push.
  assert.equal((await putNar(server, await freshNar('zstd'), `Bearer ${(await server.token('admin'))}`)).status, 201)
})

test('no token, an unknown one, or a malformed header: 401 with WWW-Authenticate, nothing stored', async (t) => {
  const server = await startServer(t)
  const token = await server.token('push')
  const nar = await freshNar('xz')
  assertUnauthorized(await putNar(server, nar), /this request needs a token with push scope/)
  for (const authorization of [`Bearer ${generateToken()}`, basic('narwhal', 'wrong'), basic(token, 'x')]) {
    assertUnauthorized(await putNar(server, nar, authorization), /the token is unknown, revoked or expired/)
  }
  for (const authorization of ['Bearer', 'Bearer ', 'Basic', `Token ${token}`, `Basic ${token}`, basic('narwhal', ''), token]) {
    assertUnauthorized(await putNar(server, nar, authorization), /needs a token|unknown, revoked or expired/)
  }
  assert.deepEqual(await server.storedFiles(), [])
  assert.deepEqual(await rowCounts(server), { narFiles: 0, narinfos: 0, refs: 0, auxFiles: 0 })
})

test('a read token on a write: 403 NARWHAL_FORBIDDEN naming the scopes, nothing stored', async (t) => {
  const server = await startServer(t)
  const nar = await freshNar('xz')
  const answer = await putNar(server, nar, `Bearer ${(await server.token('read'))}`)
  assert.equal(answer.status, 403)
  assert.equal(answer.body, 'NARWHAL_FORBIDDEN: the token "test-read" has read scope; this request needs push\n')
  const narinfo = await put(`${server.url}/${nar.hashPart}.narinfo`, 'StorePath: x\n', (await server.token('read')))
  assert.equal(narinfo.status, 403)
  const log = await put(`${server.url}/log/${nar.hashPart}-x.drv`, 'a build log\n', (await server.token('read')))
  assert.equal(log.status, 403)
  assert.deepEqual(await server.storedFiles(), [])
  assert.deepEqual(await rowCounts(server), { narFiles: 0, narinfos: 0, refs: 0, auxFiles: 0 })
})

test('a token created and then revoked with the real CLI while the server runs: 401 at once', async (t) => {
  const server = await startServer(t)
  const data = server.cache.layout.dataDir
  const token = (await runOk('node', [CLI, 'token', 'create', '--scope', 'push', '--name', 'ci', '--data', data, ...(await backendFor(data)).args])).trim()
  assert.match(token, /^nw_/)
  assert.equal((await putNar(server, await freshNar('xz'), `Bearer ${token}`)).status, 201)

  const row = (await server.cache.metadata.tokens.byHash(hashToken(token)))
  assert.equal(row?.name, 'ci')
  assert.equal(row.scope, 'push')
  assert.match(await runOk('node', [CLI, 'token', 'revoke', String(row.id), '--data', data, ...(await backendFor(data)).args]), new RegExp(`revoked token ${row.id}`))

  const nar = await freshNar('xz')
  assertUnauthorized(await putNar(server, nar, `Bearer ${token}`), /the token is unknown, revoked or expired/)
  assertUnauthorized(await putNar(server, nar, basic('narwhal', token)), /revoked/)
  assert.equal((await server.cache.metadata.narFiles.get(nar.fileHash)), undefined)
})

test('a token revoked through the metadata API: 401 on the very next request', async (t) => {
  const server = await startServer(t)
  const token = await server.token('push')
  assert.equal((await putNar(server, await freshNar('xz'), `Bearer ${token}`)).status, 201)
  const row = (await server.cache.metadata.tokens.byHash(hashToken(token)))
  assert.ok(row !== undefined)
  assert.equal((await server.cache.metadata.tokens.revoke(row.id, Date.now())), true)
  assertUnauthorized(await putNar(server, await freshNar('xz'), `Bearer ${token}`), /revoked/)
})

test('an expired token: 401; a token that expires while in use stops working', async (t) => {
  const server = await startServer(t)
  const expired = await insertToken(server, 'push', Date.now() - 1000)
  assertUnauthorized(await putNar(server, await freshNar('xz'), `Bearer ${expired}`), /expired/)

  const [before, after] = [await freshNar('xz'), await freshNar('xz')]
  const expiresAt = Date.now() + 1000
  const shortLived = await insertToken(server, 'push', expiresAt)
  assert.equal((await putNar(server, before, `Bearer ${shortLived}`)).status, 201)
  await sleep(expiresAt - Date.now() + 50)
  assertUnauthorized(await putNar(server, after, `Bearer ${shortLived}`), /expired/)
  assert.equal((await rowCounts(server)).narFiles, 1)
})

test('a public cache answers reads without a token', async (t) => {
  const server = await startServer(t)
  assert.equal((await get(`${server.url}/nix-cache-info`)).status, 200)
  assert.equal((await get(`${server.url}/0123456789abcdfghijklmnpqrsvwxyz.narinfo`)).status, 404)
})

test('a private cache: reads without a token are 401, with a read (or push) token 200', async (t) => {
  const server = await startServer(t, { private: true })
  const nar = await freshNar('xz')
  assert.equal((await putNar(server, nar, `Bearer ${(await server.token('push'))}`)).status, 201)
  const read = await server.token('read')
  for (const urlPath of ['/nix-cache-info', `/${nar.url}`, '/0123456789abcdfghijklmnpqrsvwxyz.narinfo']) {
    assertUnauthorized(await get(`${server.url}${urlPath}`), /this request needs a token with read scope/)
    const head = await request(server, 'HEAD', urlPath)
    assert.equal(head.status, 401, `HEAD ${urlPath}`)
    assert.equal(head.bytes.length, 0)
    assertUnauthorized(await get(`${server.url}${urlPath}`, generateToken()), /unknown/)
  }
  const info = await get(`${server.url}/nix-cache-info`, read)
  assert.equal(info.status, 200)
  assert.match(info.body, /^StoreDir: \/nix\/store\n/)
  const narAnswer = await get(`${server.url}/${nar.url}`, undefined, { authorization: basic('nix', read) })
  assert.equal(narAnswer.status, 200)
  assert.ok(narAnswer.bytes.equals(nar.bytes))
  assert.equal((await get(`${server.url}/nix-cache-info`, (await server.token('push')))).status, 200)
  // A read token still may not write to a private cache.
  assert.equal((await putNar(server, await freshNar('xz'), `Bearer ${read}`)).status, 403)
})
