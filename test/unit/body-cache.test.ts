/**
 * What GET answers from memory (nix/body-cache.ts; the SQLite store's narinfos.body/peekBody and
 * servedGeneration) follows the database: a write by this connection is seen by the next read, a write by another
 * one (another process, a gc worker thread) by the first read CROSS_PROCESS_FRESHNESS_MS after
 * the last time data_version was read. The clock here is the test's own.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import Database from 'better-sqlite3'
import { loadConfig } from '../../src/config/config.js'
import { openCache, type OpenCache } from '../../src/cache/open-cache.js'
import type { MetadataStore } from '../../src/db/metadata-store.js'
import { CROSS_PROCESS_FRESHNESS_MS, SqliteMetadataStore } from '../../src/db/sqlite/store.js'
import { BodyCache } from '../../src/nix/body-cache.js'
import { tempDir } from '../helpers/nix.js'
import { sqliteDb } from '../helpers/sqlite.js'
import { insertNarinfo, recordNarFile } from '../helpers/metadata.js'

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

/** A cache whose metadata store reads the clock `time.now` (milliseconds), which the test moves. */
async function openTestCache (t: { after: (fn: () => Promise<void>) => void }): Promise<OpenCache & { metadata: SqliteMetadataStore, time: { now: number } }> {
  const opened = await openCache(loadConfig({ dataDir: tempDir('narwhal-body-cache-') }, {}))
  t.after(async () => { await opened.close() })
  const time = { now: 0 }
  return { ...opened, metadata: new SqliteMetadataStore(sqliteDb(opened.metadata), () => time.now), time }
}

/** Another process's connection to the same file. */
function otherConnection (t: { after: (fn: () => void) => void }, cache: OpenCache): SqliteMetadataStore {
  const other = new Database(cache.layout.database)
  t.after(() => other.close())
  return new SqliteMetadataStore(other)
}

async function insert (metadata: MetadataStore, hashPart: string, text: string): Promise<void> {
  const narFile = await recordNarFile(metadata, { fileHash: hashPart.padEnd(52, '0'), fileSize: 1, compression: 'none', narHash: `sha256:${'0'.repeat(52)}`, narSize: 1 })
  await insertNarinfo(metadata, {
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

const NO_ONE = { acceptedAt: 0, tokenId: null, tokenName: null, keyNames: [], clientAddress: null, upstream: null }
const A = 'a'.repeat(32)
const B = 'b'.repeat(32)
const served = (metadata: MetadataStore, hashPart: string): string | undefined => metadata.narinfos.peekBody(hashPart)?.toString()

test('narinfo bodies follow this connection\'s own inserts, signature merges and removals', async (t) => {
  const { metadata } = await openTestCache(t)
  assert.equal(await metadata.narinfos.body(A), undefined) // a miss, now remembered
  await insert(metadata, A, 'StorePath: one\n')
  assert.equal((await metadata.narinfos.body(A))?.toString(), 'StorePath: one\n')
  const id = (await metadata.narinfos.get(A))?.id ?? -1
  assert.deepEqual(await metadata.narinfos.mergeSignatures(id, [], ['k:sig'], 'StorePath: one\nSig: k:sig\n', NO_ONE), { kind: 'merged' })
  assert.equal(served(metadata, A), 'StorePath: one\nSig: k:sig\n')
  assert.deepEqual(await metadata.narinfos.mergeSignatures(id, [], ['k:other'], 'changed', NO_ONE), { kind: 'changed-meanwhile' },
    'a merge from signatures read before another merge is refused')
  assert.equal(served(metadata, A), 'StorePath: one\nSig: k:sig\n')
  assert.deepEqual((await metadata.narinfos.remove({ hashParts: [A] }, { dryRun: true })).storePaths, ['/nix/store/' + A + '-x'])
  assert.equal(served(metadata, A), 'StorePath: one\nSig: k:sig\n', 'a dry run changes nothing served')
  await metadata.narinfos.remove({ hashParts: [A] })
  assert.equal(await metadata.narinfos.body(A), undefined)
})

test('narinfo bodies follow what another connection committed, once the freshness bound has passed', async (t) => {
  const cache = await openTestCache(t)
  const elsewhere = otherConnection(t, cache)
  assert.equal(served(cache.metadata, A), undefined)
  await insert(elsewhere, A, 'StorePath: a\n')
  cache.time.now += CROSS_PROCESS_FRESHNESS_MS
  assert.equal(served(cache.metadata, A), 'StorePath: a\n', 'a remembered miss outlived an insert by another process')
  await insert(cache.metadata, B, 'StorePath: b\n')
  assert.equal(served(cache.metadata, B), 'StorePath: b\n', 'its own insert, with the clock standing still')
  assert.deepEqual((await elsewhere.narinfos.remove({ hashParts: [B] })).storePaths, ['/nix/store/' + B + '-x'])
  cache.time.now += CROSS_PROCESS_FRESHNESS_MS
  assert.equal(served(cache.metadata, B), undefined, 'a remembered hit outlived a removal by another process (gc)')
})

test('another connection\'s commit is not looked for again within the freshness bound', async (t) => {
  const cache = await openTestCache(t)
  const elsewhere = otherConnection(t, cache)
  assert.equal(served(cache.metadata, A), undefined)
  await insert(elsewhere, A, 'StorePath: a\n')
  // The bound is what the saving is: data_version is not read again before it has passed.
  cache.time.now += CROSS_PROCESS_FRESHNESS_MS / 2
  assert.equal(served(cache.metadata, A), undefined)
  cache.time.now += CROSS_PROCESS_FRESHNESS_MS / 2
  assert.equal(served(cache.metadata, A), 'StorePath: a\n')
})

test('servedGeneration changes with every write that can change what GET serves, and only then', async (t) => {
  const cache = await openTestCache(t)
  const elsewhere = otherConnection(t, cache)
  const { metadata } = cache
  let last = metadata.servedGeneration()
  const changed = (): boolean => {
    const now = metadata.servedGeneration()
    const was = last
    last = now
    return now !== was
  }
  assert.equal(changed(), false)
  await insert(metadata, A, 'StorePath: a\n')
  assert.equal(changed(), true, 'own insert of a narinfo (and its NAR file going live)')
  await metadata.narFiles.renew(A.padEnd(52, '0'), Date.now())
  assert.equal(changed(), false, 'a renewed grace period changes nothing served')
  const removal = await metadata.narinfos.remove({ hashParts: [A] })
  assert.equal(changed(), true, 'own removal of a narinfo')
  assert.equal(await metadata.narFiles.forget(removal.narFiles[0]?.id ?? -1), true)
  assert.equal(changed(), true, 'own removal of a NAR file row')
  await insert(elsewhere, B, 'StorePath: b\n')
  cache.time.now += CROSS_PROCESS_FRESHNESS_MS
  assert.equal(changed(), true, 'a commit by another connection')
  cache.time.now += CROSS_PROCESS_FRESHNESS_MS
  assert.equal(changed(), false)
})
