/**
 * What GET answers from memory (nix/body-cache.ts, Metadata.narinfoBody and servedGeneration)
 * follows the database: a write by this connection is seen by the next read, a write by another
 * one (another process, a gc worker thread) by the first read CROSS_PROCESS_FRESHNESS_MS after
 * the last time data_version was read. The clock here is the test's own.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import Database from 'better-sqlite3'
import { loadConfig } from '../../src/config/config.js'
import { openCache, type OpenCache } from '../../src/cache/open-cache.js'
import { CROSS_PROCESS_FRESHNESS_MS, Metadata } from '../../src/db/metadata.js'
import { BodyCache } from '../../src/nix/body-cache.js'
import { tempDir } from '../helpers/nix.js'
import { sqliteDb } from '../helpers/sqlite.js'

test('BodyCache drops the least recently used entries past its bound, counting misses too', () => {
  const cache = new BodyCache(3 * (160 + 100))
  cache.set('a', Buffer.alloc(100))
  cache.set('b', Buffer.alloc(100))
  cache.set('c', Buffer.alloc(100))
  assert.deepEqual(cache.size, { entries: 3, bytes: 780 })
  assert.ok(cache.get('a') !== undefined) // a is now the most recently used
  cache.set('d', null) // a miss costs its overhead: 160 bytes, so one entry goes
  assert.equal(cache.get('b'), undefined)
  assert.ok(cache.get('a') instanceof Buffer)
  assert.equal(cache.get('d'), null)
  cache.set('a', Buffer.alloc(50)) // replacing an entry replaces its cost
  assert.deepEqual(cache.size, { entries: 3, bytes: 160 + 50 + 160 + 160 + 100 })
  cache.set('huge', Buffer.alloc(10_000)) // larger than the whole bound: not kept, nothing evicted
  assert.equal(cache.get('huge'), undefined)
  assert.equal(cache.size.entries, 3)
  cache.keepFor(1) // a first generation: what was kept before it is forgotten
  assert.deepEqual(cache.size, { entries: 0, bytes: 0 })
  cache.set('a', null)
  cache.keepFor(1)
  assert.equal(cache.get('a'), null, 'the same generation keeps the entries')
  cache.keepFor(2)
  assert.equal(cache.get('a'), undefined)
})

/** A cache whose Metadata reads the clock `time.now` (milliseconds), which the test moves. */
function openTestCache (t: { after: (fn: () => void) => void }): OpenCache & { time: { now: number } } {
  const opened = openCache(loadConfig({ dataDir: tempDir('narwhal-body-cache-') }, {}))
  t.after(() => await opened.close())
  const time = { now: 0 }
  return { ...opened, metadata: new Metadata(sqliteDb(opened.metadata), () => time.now), time }
}

function insert (metadata: Metadata, hashPart: string, text: string): void {
  const narFile = metadata.recordNarFile({ fileHash: hashPart.padEnd(52, '0'), fileSize: 1, compression: 'none', narHash: `sha256:${'0'.repeat(52)}`, narSize: 1 })
  metadata.insertNarinfo({
    hashPart,
    storePath: `/nix/store/${hashPart}-x`,
    narFileId: narFile.id,
    narHash: `sha256:${'0'.repeat(52)}`,
    narSize: 1,
    deriver: null,
    ca: null,
    sigs: [],
    narinfo: text,
    references: []
  })
}

const A = 'a'.repeat(32)
const B = 'b'.repeat(32)

test('narinfoBody sees this connection\'s own inserts, signature updates and deletes', (t) => {
  const { metadata } = openTestCache(t)
  assert.equal(metadata.narinfoBody(A), undefined) // a miss, now remembered
  insert(metadata, A, 'StorePath: one\n')
  assert.equal(metadata.narinfoBody(A)?.toString(), 'StorePath: one\n')
  const id = metadata.narinfo(A)?.id ?? -1
  metadata.updateSignatures(id, ['k:sig'], 'StorePath: one\nSig: k:sig\n')
  assert.equal(metadata.narinfoBody(A)?.toString(), 'StorePath: one\nSig: k:sig\n')
  assert.equal(metadata.deleteNarinfo(A), true)
  assert.equal(metadata.narinfoBody(A), undefined)
})

test('narinfoBody sees what another connection committed, once the freshness bound has passed', (t) => {
  const cache = openTestCache(t)
  const other = new Database(cache.layout.database)
  t.after(() => other.close())
  const elsewhere = new Metadata(other)
  assert.equal(cache.metadata.narinfoBody(A), undefined)
  insert(elsewhere, A, 'StorePath: a\n')
  cache.time.now += CROSS_PROCESS_FRESHNESS_MS
  assert.equal(cache.metadata.narinfoBody(A)?.toString(), 'StorePath: a\n', 'a remembered miss outlived an insert by another process')
  insert(cache.metadata, B, 'StorePath: b\n')
  assert.equal(cache.metadata.narinfoBody(B)?.toString(), 'StorePath: b\n', 'its own insert, with the clock standing still')
  assert.equal(elsewhere.deleteNarinfo(B), true)
  cache.time.now += CROSS_PROCESS_FRESHNESS_MS
  assert.equal(cache.metadata.narinfoBody(B), undefined, 'a remembered hit outlived a delete by another process (gc)')
})

test('another connection\'s commit is not looked for again within the freshness bound', (t) => {
  const cache = openTestCache(t)
  const other = new Database(cache.layout.database)
  t.after(() => other.close())
  assert.equal(cache.metadata.narinfoBody(A), undefined)
  insert(new Metadata(other), A, 'StorePath: a\n')
  // The bound is what the saving is: data_version is not read again before it has passed.
  cache.time.now += CROSS_PROCESS_FRESHNESS_MS / 2
  assert.equal(cache.metadata.narinfoBody(A), undefined)
  cache.time.now += CROSS_PROCESS_FRESHNESS_MS / 2
  assert.equal(cache.metadata.narinfoBody(A)?.toString(), 'StorePath: a\n')
})

test('narinfoBody does not remember what it read inside a transaction that is rolled back', (t) => {
  const { db, metadata } = openTestCache(t)
  assert.throws(() => db.transaction(() => {
    insert(metadata, A, 'StorePath: a\n')
    assert.equal(metadata.narinfoBody(A)?.toString(), 'StorePath: a\n')
    throw new Error('roll back')
  })(), /roll back/)
  assert.equal(metadata.narinfoBody(A), undefined)
})

test('servedGeneration changes with every write that can change what GET serves, and only then', (t) => {
  const cache = openTestCache(t)
  const other = new Database(cache.layout.database)
  t.after(() => other.close())
  const { metadata } = cache
  let last = metadata.servedGeneration()
  const changed = (): boolean => {
    const now = metadata.servedGeneration()
    const was = last
    last = now
    return now !== was
  }
  assert.equal(changed(), false)
  insert(metadata, A, 'StorePath: a\n')
  assert.equal(changed(), true, 'own insert of a narinfo')
  metadata.renewNarFile(A.padEnd(52, '0'))
  assert.equal(changed(), false, 'a renewed grace period changes nothing served')
  assert.equal(metadata.deleteNarinfo(A), true)
  assert.equal(changed(), true, 'own delete of a narinfo')
  const row = metadata.narFile(A.padEnd(52, '0'))
  assert.equal(metadata.deleteNarFileRow(row?.id ?? -1), true)
  assert.equal(changed(), true, 'own delete of a NAR file row')
  insert(new Metadata(other), B, 'StorePath: b\n')
  cache.time.now += CROSS_PROCESS_FRESHNESS_MS
  assert.equal(changed(), true, 'a commit by another connection')
  cache.time.now += CROSS_PROCESS_FRESHNESS_MS
  assert.equal(changed(), false)
})
