/**
 * GET /<hash>.narinfo and GET of a small whole NAR are answered before Fastify
 * (server/fast-reads.ts) with exactly what the routes answer, counted in /metrics, and only
 * when no Fastify hook is needed for a read.
 */
import { test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { mkdirSync, rmSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import Database from 'better-sqlite3'
import { setTimeout as sleep } from 'node:timers/promises'
import type { FastifyInstance } from 'fastify'
import type { OpenCache } from '../../src/cache/open-cache.js'
import { CROSS_PROCESS_FRESHNESS_MS } from '../../src/db/sqlite/store.js'
import { sqliteOnly } from '../helpers/backend.js'
import { insertNarinfo, recordNarFile } from '../helpers/metadata.js'
import { startServer } from '../helpers/server.js'
import { sqliteDb } from '../helpers/sqlite.js'
import { narFilePath } from '../../src/storage/layout.js'

const HIT = 'a'.repeat(32)
const MISS = 'b'.repeat(32)
const TEXT = `StorePath: /nix/store/${HIT}-x\nURL: nar/x.nar\nCompression: none\n`

interface Started { app: FastifyInstance, url: string, cache: OpenCache, routed: string[] }

/** A server holding one narinfo (HIT), with a hook noting each request Fastify itself handles. */
async function start (t: TestContext, env: Record<string, string> = {}): Promise<Started> {
  const routed: string[] = []
  const server = await startServer(t, {
    env,
    beforeListen: app => app.addHook('onRequest', async (request) => { routed.push(request.url) })
  })
  const { metadata } = server.cache
  const narFile = await recordNarFile(metadata, { fileHash: 'x'.padEnd(52, '0'), fileSize: 1, compression: 'none', narHash: `sha256:${'0'.repeat(52)}`, narSize: 1 })
  await insertNarinfo(metadata, { hashPart: HIT, storePath: `/nix/store/${HIT}-x`, narFileId: narFile.id, narHash: `sha256:${'0'.repeat(52)}`, narSize: 1, deriver: null, ca: null, sigs: [], narinfo: TEXT, references: [] })
  return { app: server.app, url: server.url, cache: server.cache, routed }
}

function answerOf (status: number, headers: { get: (name: string) => string | null }, body: string): object {
  return { status, type: headers.get('content-type'), length: headers.get('content-length'), body }
}

test('hits and misses are answered without Fastify, byte for byte as the route answers them', sqliteOnly('the fast path answers from SQLite\'s synchronous reads and the folder\'s files'), async (t) => {
  const { app, url, routed } = await start(t)
  for (const hash of [HIT, MISS]) {
    const fast = await fetch(`${url}/${hash}.narinfo`)
    const fastAnswer = answerOf(fast.status, fast.headers, await fast.text())
    const route = await app.inject({ method: 'GET', url: `/${hash}.narinfo` })
    const routeAnswer = answerOf(route.statusCode, { get: (n: string) => route.headers[n]?.toString() ?? null }, route.body)
    assert.deepEqual(fastAnswer, routeAnswer)
  }
  assert.deepEqual(routed, [`/${HIT}.narinfo`, `/${MISS}.narinfo`], 'only the two inject() calls went through Fastify')
  assert.equal(await (await fetch(`${url}/${HIT}.narinfo`)).text(), TEXT)
})

test('what the fast path does not answer goes on to Fastify', async (t) => {
  const { url, routed } = await start(t)
  const head = await fetch(`${url}/${HIT}.narinfo`, { method: 'HEAD' })
  assert.equal(head.status, 200)
  assert.equal(head.headers.get('content-length'), String(Buffer.byteLength(TEXT)))
  assert.equal(await (await fetch(`${url}/${HIT}.narinfo?x=1`)).text(), TEXT)
  assert.equal((await fetch(`${url}/${HIT.toUpperCase()}.narinfo`)).status, 400)
  assert.equal((await fetch(`${url}/${HIT}.narinfo`, { method: 'PUT', body: 'x' })).status, 401)
  assert.deepEqual(routed, [`/${HIT}.narinfo`, `/${HIT}.narinfo?x=1`, `/${HIT.toUpperCase()}.narinfo`, `/${HIT}.narinfo`])
})

test('fast answers are counted in /metrics under the route, and noted for gc', sqliteOnly('the fast path answers from SQLite\'s synchronous reads and the folder\'s files'), async (t) => {
  const { app, url, cache } = await start(t)
  const readAt = sqliteDb(cache.metadata).prepare<[string], { t: number }>('SELECT last_accessed_at AS t FROM narinfos WHERE hash_part = ?')
  sqliteDb(cache.metadata).prepare('UPDATE narinfos SET last_accessed_at = 0').run()
  await fetch(`${url}/${HIT}.narinfo`)
  await fetch(`${url}/${HIT}.narinfo`)
  await fetch(`${url}/${MISS}.narinfo`)
  const text = await (await fetch(`${url}/metrics`)).text()
  assert.match(text, /narwhal_http_requests_total\{method="GET",route="\/:hash\.narinfo",status="200"\} 2/)
  assert.match(text, /narwhal_http_requests_total\{method="GET",route="\/:hash\.narinfo",status="404"\} 1/)
  const sent = Number(/narwhal_sent_bytes_total (\d+)/.exec(text)?.[1])
  assert.ok(sent >= 2 * Buffer.byteLength(TEXT) + 81, `sent bytes ${sent}`)
  await app.close() // writes the pending read times
  assert.ok((readAt.get(HIT)?.t ?? 0) > 0, 'the hit was not noted for gc')
})

test('a private cache, a read budget or a debug log keeps every read in Fastify', async (t) => {
  const settings: Array<Record<string, string>> = [{ NARWHAL_PRIVATE: 'true' }, { NARWHAL_RATE_LIMIT_READS: '1000' }, { NARWHAL_LOG_LEVEL: 'debug' }]
  for (const env of settings) {
    const { url, routed } = await start(t, env)
    const response = await fetch(`${url}/${HIT}.narinfo`)
    assert.equal(response.status, env.NARWHAL_PRIVATE === 'true' ? 401 : 200, JSON.stringify(env))
    assert.deepEqual(routed, [`/${HIT}.narinfo`], JSON.stringify(env))
  }
})

/** Records a NAR file of `bytes` (the GET path does not check its hash) and returns its URL path. */
async function addNar (cache: OpenCache, seed: string, bytes: Buffer): Promise<string> {
  const fileHash = seed.repeat(52)
  await recordNarFile(cache.metadata, { fileHash, fileSize: bytes.length, compression: 'none', narHash: `sha256:${'0'.repeat(52)}`, narSize: bytes.length })
  const file = narFilePath(cache.layout, fileHash)
  mkdirSync(path.dirname(file), { recursive: true })
  writeFileSync(file, bytes)
  return `/nar/${fileHash}.nar`
}

test('a small whole NAR is answered without Fastify, byte for byte as the route answers it', sqliteOnly('the fast path answers from SQLite\'s synchronous reads and the folder\'s files'), async (t) => {
  const { app, url, cache, routed } = await start(t)
  const small = await addNar(cache, 'c', Buffer.from('small NAR bytes'))
  const fast = await fetch(url + small)
  const fastAnswer = { status: fast.status, headers: Object.fromEntries([...fast.headers].filter(([n]) => n !== 'date' && n !== 'connection' && n !== 'keep-alive')), body: await fast.text() }
  const route = await app.inject({ method: 'GET', url: small })
  const routeHeaders = Object.fromEntries(Object.entries(route.headers).filter(([n]) => n !== 'date' && n !== 'connection' && n !== 'keep-alive').map(([n, v]) => [n, String(v)]))
  assert.deepEqual(fastAnswer, { status: route.statusCode, headers: routeHeaders, body: route.body })
  assert.equal(fastAnswer.body, 'small NAR bytes')
  assert.equal(fastAnswer.headers.etag, `"${'c'.repeat(52)}"`)
  assert.deepEqual(routed, [small], 'only the inject() call went through Fastify')
  const text = await (await fetch(`${url}/metrics`)).text()
  assert.match(text, /narwhal_http_requests_total\{method="GET",route="\/nar\/:file",status="200"\} 2/)
})

test('a NAR that is ranged, large, missing or unrecorded goes on to Fastify', sqliteOnly('the fast path answers from SQLite\'s synchronous reads and the folder\'s files'), async (t) => {
  const { url, cache, routed } = await start(t)
  const small = await addNar(cache, 'd', Buffer.from('0123456789'))
  const large = await addNar(cache, 'f', Buffer.alloc(64 * 1024 + 1, 7))
  const gone = await addNar(cache, 'g', Buffer.from('gone'))
  rmSync(narFilePath(cache.layout, 'g'.repeat(52)))
  const ranged = await fetch(url + small, { headers: { range: 'bytes=2-4' } })
  assert.equal(ranged.status, 206)
  assert.equal(await ranged.text(), '234')
  const whole = await fetch(url + large)
  assert.equal(whole.status, 200)
  assert.equal((await whole.arrayBuffer()).byteLength, 64 * 1024 + 1)
  assert.equal((await fetch(url + gone)).status, 404)
  assert.equal((await fetch(`${url}/nar/${'h'.repeat(52)}.nar`)).status, 404)
  assert.deepEqual(routed, [small, large, gone, `/nar/${'h'.repeat(52)}.nar`])
})

test('a small NAR kept in memory is not served once another process removed it', sqliteOnly('the fast path answers from SQLite\'s synchronous reads and the folder\'s files'), async (t) => {
  const { url, cache } = await start(t)
  const small = await addNar(cache, 'j', Buffer.from('kept in memory'))
  assert.equal(await (await fetch(url + small)).text(), 'kept in memory')
  // What `narwhal gc` or another worker does: the row goes in its own connection, then the file.
  // Asked between the two, with the file still there, only the database can say it is gone.
  const other = new Database(cache.layout.database)
  t.after(() => other.close())
  assert.equal(other.prepare('DELETE FROM nar_files WHERE file_hash = ?').run('j'.repeat(52)).changes, 1)
  // Seen by the server within CROSS_PROCESS_FRESHNESS_MS (db/metadata.ts).
  await sleep(2 * CROSS_PROCESS_FRESHNESS_MS)
  assert.equal((await fetch(url + small)).status, 404)
  rmSync(narFilePath(cache.layout, 'j'.repeat(52)))
  assert.equal((await fetch(url + small)).status, 404)
})
