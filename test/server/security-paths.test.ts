/**
 * Rule: names in URLs are checked against the protocol's patterns before any file or SQL lookup,
 * so hostile paths (traversal, raw or percent-encoded; uppercase or wrong-length hashes; letters
 * outside the nix32 alphabet) are always answered 4xx, never 5xx, never with a file's content,
 * and never store anything. A 5xx, when one does happen, says nothing about the file system.
 *
 * Requests go through node:http, which sends each path byte for byte (fetch would resolve `..`).
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdirSync, rmSync } from 'node:fs'
import { sqliteOnly } from '../helpers/backend.js'
import { startServer, type TestServer } from '../helpers/server.js'
import { fileHashOf, freshNar, put, request, rowCounts, ruleOf, type Answer } from '../helpers/upload.js'

const H = '0123456789abcdfghijklmnpqrsvwxyz' // a valid 32-char nix32 hash part
const F = fileHashOf(Buffer.from('narwhal')) // a valid 52-char file hash

const TRAVERSAL = [
  '/nar/..%2F..%2Fetc%2Fpasswd',
  '/nar/..%2f..%2f..%2fnarwhal.sqlite',
  '/nar/../../etc/passwd',
  '/nar/%2e%2e/%2e%2e/etc/passwd',
  '/nar/%2e%2e%2f%2e%2e%2fnarwhal.sqlite',
  `/nar/..%2F${F}.nar.xz`,
  `/nar/${F.slice(0, 2)}%2F${F}.nar.xz`,
  '/log/..%2F..%2Fx',
  '/log/../../narwhal.sqlite',
  '/log/%2e%2e%2f%2e%2e%2fetc%2fpasswd',
  `/log/${H}-x.drv%2F..%2F..%2F..%2Fetc%2Fpasswd`,
  '/%2e%2e/%2e%2e/etc/passwd',
  '/%2e%2e/nix-cache-info',
  '/..%2F..%2Fetc%2Fpasswd.narinfo',
  '/..%2F..%2Fetc%2Fpasswd.ls',
  '/realisations/..%2F..%2Fnarwhal.sqlite',
  `/realisations/sha256:${'ab'.repeat(32)}!..%2F..%2Fx.doi`,
  '/build-trace-v2/..%2F..%2F/out.doi',
  `/build-trace-v2/${H}-x.drv/..%2F..%2Fout.doi`,
  '/debuginfo/..%2F..%2Fetc%2Fpasswd',
  '/debuginfo/%2e%2e',
  `/nar/${F}.nar%00.xz`,
  `/${H}.narinfo%00`,
  `/log/${H}-x.drv%00`
]

const BAD_HASHES = [
  // narinfo: uppercase, wrong length, letters outside nix32 (e o u t)
  `/${H.toUpperCase()}.narinfo`,
  `/${H.slice(1)}.narinfo`,
  `/${H}a.narinfo`,
  ...['e', 'o', 'u', 't'].map(c => `/${c}${H.slice(1)}.narinfo`),
  // nar
  `/nar/${F.toUpperCase()}.nar.xz`,
  `/nar/${F.slice(1)}.nar.xz`,
  `/nar/${F}a.nar.xz`,
  ...['e', 'o', 'u', 't'].map(c => `/nar/${c}${F.slice(1)}.nar.xz`),
  `/nar/${F}.nar.gz`,
  `/nar/${F}.nar.xz.sh`,
  `/nar/${F}`,
  // log
  `/log/${H.toUpperCase()}-hello.drv`,
  `/log/${H.slice(1)}-hello.drv`,
  `/log/${H}-hello`,
  `/log/${H}hello.drv`,
  ...['e', 'o', 'u', 't'].map(c => `/log/${c}${H.slice(1)}-hello.drv`),
  // ls
  `/${H.toUpperCase()}.ls`,
  `/${H.slice(1)}.ls`,
  ...['e', 'o', 'u', 't'].map(c => `/${c}${H.slice(1)}.ls`),
  // debuginfo: 40 lowercase hex only
  `/debuginfo/${'ABCDEF0123'.repeat(4)}`,
  `/debuginfo/${'abcdef0123'.repeat(4)}0`,
  `/debuginfo/${'abcdef012g'.repeat(4)}`,
  // realisations and build traces
  `/realisations/sha256:${'AB'.repeat(32)}!out.doi`,
  `/realisations/sha256:${'ab'.repeat(31)}!out.doi`,
  `/realisations/sha256:${'ab'.repeat(32)}!out.json`,
  `/realisations/md5:${'ab'.repeat(16)}!out.doi`,
  `/build-trace-v2/${H.toUpperCase()}-x.drv/out.doi`,
  `/build-trace-v2/${H}-x.drv/out/more.doi`,
  ...['e', 'o', 'u', 't'].map(c => `/build-trace-v2/${c}${H.slice(1)}-x.drv/out.doi`)
]

function assertSafe (answer: Answer, what: string, server: TestServer): void {
  assert.ok(answer.status >= 400 && answer.status < 500, `${what}: ${answer.status} ${answer.body}`)
  assert.ok(!answer.body.includes(server.cache.layout.dataDir), `${what}: body names the data folder`)
  assert.doesNotMatch(answer.body, /root:x:0:0|SQLite format/, `${what}: body carries a file's content`)
  assert.doesNotMatch(answer.body, /\bat .*\.js:\d+/, `${what}: body carries a stack trace`)
}

test('path traversal, raw and percent-encoded, on every route: 4xx, no file content, nothing stored', async (t) => {
  const server = await startServer(t)
  const token = await server.token('push')
  // Something worth stealing next to the store: the database exists, /etc/passwd exists.
  for (const urlPath of TRAVERSAL) {
    for (const method of ['GET', 'HEAD']) {
      assertSafe(await request(server, method, urlPath), `${method} ${urlPath}`, server)
    }
    const answer = await request(server, 'PUT', urlPath, { headers: { authorization: `Bearer ${token}` }, body: '{}' })
    assertSafe(answer, `PUT ${urlPath}`, server)
  }
  assert.deepEqual(await server.storedFiles(), [])
  assert.deepEqual(await rowCounts(server), { narFiles: 0, narinfos: 0, refs: 0, auxFiles: 0 })
})

test('uppercase, wrong-length and non-nix32 names on every route: 400 NARWHAL_BAD_NAME, nothing stored', async (t) => {
  const server = await startServer(t)
  const token = await server.token('push')
  for (const urlPath of BAD_HASHES) {
    for (const method of ['GET', 'PUT']) {
      const answer = await request(server, method, urlPath,
        method === 'PUT' ? { headers: { authorization: `Bearer ${token}` }, body: '{}' } : {})
      assertSafe(answer, `${method} ${urlPath}`, server)
      // Names a route matched are refused by name; the rest match no route at all.
      assert.ok(answer.status === 400 || answer.status === 404, `${method} ${urlPath}: ${answer.status}`)
      assert.equal(ruleOf(answer), answer.status === 400 ? 'NARWHAL_BAD_NAME' : 'NARWHAL_NOT_FOUND', `${method} ${urlPath}`)
    }
  }
  assert.deepEqual(await server.storedFiles(), [])
  assert.deepEqual(await rowCounts(server), { narFiles: 0, narinfos: 0, refs: 0, auxFiles: 0 })
})

test('the bad names that a route does match are refused by that route with 400, not 404', async (t) => {
  const server = await startServer(t)
  const routed = [
    `/${H.toUpperCase()}.narinfo`, `/e${H.slice(1)}.narinfo`, `/${H.slice(1)}.narinfo`,
    `/nar/${F.toUpperCase()}.nar.xz`, `/nar/t${F.slice(1)}.nar`, `/nar/${F}.nar.gz`,
    `/log/${H.toUpperCase()}-hello.drv`, `/log/u${H.slice(1)}-hello.drv`,
    `/${H.toUpperCase()}.ls`, `/debuginfo/${'ABCDEF0123'.repeat(4)}`,
    `/realisations/sha256:${'AB'.repeat(32)}!out.doi`, `/build-trace-v2/o${H.slice(1)}-x.drv/out.doi`,
    '/nar/..%2F..%2Fetc%2Fpasswd', '/log/..%2F..%2Fx'
  ]
  for (const urlPath of routed) {
    const answer = await request(server, 'GET', urlPath)
    assert.equal(answer.status, 400, `${urlPath}: ${answer.body}`)
    assert.equal(ruleOf(answer), 'NARWHAL_BAD_NAME', urlPath)
  }
})

test('a very long URL and a NUL byte: 4xx, not 5xx', async (t) => {
  const server = await startServer(t)
  for (const urlPath of [`/nar/${'a'.repeat(8000)}.nar.xz`, `/log/${H}-${'x'.repeat(5000)}.drv`, `/${'z'.repeat(8000)}.narinfo`, '/log/%00']) {
    assertSafe(await request(server, 'GET', urlPath), urlPath, server)
  }
})

test('a 5xx (here: store/tmp removed under the running server) names no path and no OS error', sqliteOnly('removes the folder\'s store/tmp under the running server'), async (t) => {
  const server = await startServer(t)
  const nar = await freshNar('xz')
  rmSync(server.cache.layout.tmpDir, { recursive: true, force: true })
  const answer = await put(`${server.url}/${nar.url}`, nar.bytes, (await server.token('push')))
  assert.equal(answer.status, 500)
  assert.equal(answer.body, 'NARWHAL_INTERNAL: internal error; the server log has the details\n')
  assert.ok(!answer.body.includes(server.cache.layout.dataDir))
  assert.doesNotMatch(answer.body, /ENOENT|\/tmp\//)
  assert.equal((await rowCounts(server)).narFiles, 0)
  // Put back, the same upload succeeds: the failure left nothing half-done.
  mkdirSync(server.cache.layout.tmpDir)
  assert.equal((await put(`${server.url}/${nar.url}`, nar.bytes, (await server.token('push')))).status, 201)
})
