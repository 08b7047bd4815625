/**
 * Reads count as use for garbage collection: a narinfo GET or HEAD, and a NAR GET, HEAD or ranged
 * GET, update the last-use time after the tracker's flush (not on the read itself, which stays
 * one lookup), and so does closing the server. Misses and uploads record nothing.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import Database from 'better-sqlite3'
import { AccessTracker } from '../../src/cache/access-tracker.js'
import { generateKeyPair } from '../../src/signing/keys.js'
import { sqliteOnly } from '../helpers/backend.js'
import { startServer, type TestServer } from '../helpers/server.js'
import { eventually, freshNar, get, makeNarinfo, request, upload, type Nar } from '../helpers/upload.js'
import { sqliteDb } from '../helpers/sqlite.js'

const uploader = generateKeyPair('test-uploader-1')
const LONG_AGO = 1_000_000

async function lastUse (server: TestServer, nar: Nar): Promise<{ narinfo: number, narFile: number }> {
  const times = await server.cache.metadata.retention.lastUse(nar.hashPart)
  assert.ok(times !== undefined, `${nar.hashPart} is stored`)
  return times
}

/** Pretends the path was uploaded and last used long ago. */
async function age (server: TestServer, nar: Nar): Promise<void> {
  await server.cache.metadata.retention.setLastUse([nar.hashPart], [nar.fileHash], LONG_AGO)
}

async function serverWithPath (t: Parameters<typeof startServer>[0]): Promise<{ server: TestServer, nar: Nar }> {
  const server = await startServer(t, { trustedKeys: [uploader.publicKeyText] })
  const nar = await freshNar('xz')
  const answers = await upload(server, nar, makeNarinfo(nar, { keys: [uploader.secretKey] }), (await server.token('push')))
  assert.equal(answers.narinfo.status, 201)
  await age(server, nar)
  return { server, nar }
}

test('a narinfo read is recorded at the next flush, not before', async (t) => {
  const { server, nar } = await serverWithPath(t)
  assert.equal((await get(`${server.url}/${nar.hashPart}.narinfo`)).status, 200)
  assert.deepEqual((await lastUse(server, nar)), { narinfo: LONG_AGO, narFile: LONG_AGO }, 'the read itself writes nothing')
  const before = Date.now()
  await server.app.narwhal.access.flush()
  const after = (await lastUse(server, nar))
  assert.ok(after.narinfo >= before, 'the narinfo read is recorded')
  assert.equal(after.narFile, LONG_AGO, 'a narinfo read does not touch the NAR file')

  await age(server, nar)
  assert.equal((await request(server, 'HEAD', `/${nar.hashPart}.narinfo`)).status, 200)
  await server.app.narwhal.access.flush()
  assert.ok((await lastUse(server, nar)).narinfo >= before, 'HEAD counts too')
})

test('NAR reads (GET, HEAD, a range) are recorded on the NAR file', async (t) => {
  const { server, nar } = await serverWithPath(t)
  for (const [method, headers] of [['GET', {}], ['HEAD', {}], ['GET', { range: 'bytes=0-9' }]] as const) {
    await age(server, nar)
    const answer = await request(server, method, `/${nar.url}`, { headers })
    assert.ok(answer.status === 200 || answer.status === 206, `${method} ${answer.status}`)
    const before = Date.now()
    await server.app.narwhal.access.flush()
    const after = (await lastUse(server, nar))
    assert.ok(after.narFile >= before, `${method} ${JSON.stringify(headers)} is recorded`)
    assert.equal(after.narinfo, LONG_AGO)
  }
})

test('misses record nothing; closing the server writes what is pending', async (t) => {
  const { server, nar } = await serverWithPath(t)
  const other = await freshNar('xz')
  assert.equal((await get(`${server.url}/${other.hashPart}.narinfo`)).status, 404)
  assert.equal((await get(`${server.url}/${other.url}`)).status, 404)
  assert.equal(server.app.narwhal.access.pending, 0, 'a flood of misses cannot fill the tracker')

  assert.equal((await get(`${server.url}/${nar.hashPart}.narinfo`)).status, 200)
  assert.equal((await get(`${server.url}/${nar.url}`)).status, 200)
  const before = Date.now()
  await server.app.close()
  const after = (await lastUse(server, nar))
  assert.ok(after.narinfo >= before && after.narFile >= before, 'the close flushed both reads')
})

test('a flush that cannot get the write lock is reported and dropped; the next one records again', sqliteOnly('holds SQLite\'s write lock from a second connection'), async (t) => {
  const { server, nar } = await serverWithPath(t)
  const errors: unknown[] = []
  const tracker = new AccessTracker(server.cache.metadata.retention, { onError: err => { errors.push(err) } })
  t.after(async () => { await tracker.close() })
  sqliteDb(server.cache.metadata).pragma('busy_timeout = 50')
  const other = new Database(server.cache.layout.database)
  other.exec('BEGIN IMMEDIATE')
  tracker.narinfo(nar.hashPart)
  await tracker.flush()
  other.exec('ROLLBACK')
  other.close()
  assert.equal(errors.length, 1)
  assert.match(String(errors[0]), /locked|busy/i)
  assert.equal(tracker.pending, 0, 'the failed batch is dropped, not retried forever')
  assert.equal((await lastUse(server, nar)).narinfo, LONG_AGO)

  tracker.narinfo(nar.hashPart)
  const before = Date.now()
  await tracker.flush()
  assert.ok((await lastUse(server, nar)).narinfo >= before)
})

test('the tracker flushes early when many reads are pending', async (t) => {
  const { server, nar } = await serverWithPath(t)
  const tracker = new AccessTracker(server.cache.metadata.retention, { maxPending: 2 })
  t.after(async () => { await tracker.close() })
  tracker.narinfo(nar.hashPart)
  assert.equal((await lastUse(server, nar)).narinfo, LONG_AGO)
  const before = Date.now()
  tracker.narFile(nar.fileHash)
  assert.equal(tracker.pending, 0)
  // The early flush runs in the background: done at once on SQLite, after a round trip on PostgreSQL.
  assert.ok(await eventually(async () => {
    const times = await lastUse(server, nar)
    return times.narinfo >= before && times.narFile >= before
  }), 'both reads were written without a flush call')
})

test('the pusher asking which paths are missing counts as use of those present', async (t) => {
  const { server, nar } = await serverWithPath(t)
  const other = await freshNar('xz')
  const answer = await fetch(`${server.url}/api/v1/missing-paths`, {
    method: 'POST',
    headers: { authorization: `Bearer ${(await server.token('push'))}`, 'content-type': 'application/json' },
    body: JSON.stringify({ hashParts: [nar.hashPart, other.hashPart] })
  })
  assert.deepEqual(await answer.json(), { missing: [other.hashPart] })
  const before = Date.now()
  await server.app.narwhal.access.flush()
  assert.ok((await lastUse(server, nar)).narinfo >= before)
})

test('a read within a minute of the recorded one is not written again', async (t) => {
  const { server, nar } = await serverWithPath(t)
  const access = server.app.narwhal.access
  const t0 = Date.now()
  access.narinfo(nar.hashPart)
  await access.flush(t0)
  access.narinfo(nar.hashPart)
  await access.flush(t0 + 30_000)
  assert.equal((await lastUse(server, nar)).narinfo, t0, 'within the resolution: the row is left as it is')
  access.narinfo(nar.hashPart)
  await access.flush(t0 + 120_000)
  assert.equal((await lastUse(server, nar)).narinfo, t0 + 120_000)
})
