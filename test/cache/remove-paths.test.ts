/**
 * The removal rules shared by fsck and gc: a narinfo goes with its referrers, a NAR file goes
 * only when no narinfo names it (marked 'deleting', its file deleted, its row forgotten), and a
 * dry run changes nothing.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { loadConfig } from '../../src/config/config.js'
import { openCache, type OpenCache } from '../../src/cache/open-cache.js'
import { PENDING_GRACE_MS, removeNarinfos, removeUnnamedNarFiles, removeUnrecordedNarFile } from '../../src/cache/remove-paths.js'
import type { NarFileFacts } from '../../src/db/metadata-store.js'
import { cacheConfig } from '../helpers/backend.js'
import { tempDir } from '../helpers/nix.js'
import { insertNarinfo, recordNarFile } from '../helpers/metadata.js'
import { holdsObject, putNar } from '../helpers/blobs.js'

/** A fake but well-formed 32-char hash part / 52-char file hash from one letter. */
const hashPart = (c: string): string => c.repeat(32)
const fileHash = (c: string): string => c.repeat(52)
/** Whether the blob store holds the (uncompressed) NAR object of `c`. */
const holds = async (cache: OpenCache, c: string): Promise<boolean> => await holdsObject(cache.blobs, { fileHash: fileHash(c), compression: 'none' })
const putObject = async (cache: OpenCache, c: string, bytes: string): Promise<void> => {
  await putNar(cache.blobs, { fileHash: fileHash(c), compression: 'none' }, Buffer.from(bytes))
}

async function addNarFile (cache: OpenCache, c: string, createdAt = Date.now()): Promise<number> {
  await putObject(cache, c, 'x'.repeat(10))
  return (await recordNarFile(cache.metadata, { fileHash: fileHash(c), fileSize: 10, compression: 'none', narHash: fileHash(c), narSize: 10 }, createdAt)).id
}

async function addNarinfo (cache: OpenCache, c: string, narFileId: number, refs: string[]): Promise<void> {
  await insertNarinfo(cache.metadata, {
    hashPart: hashPart(c),
    storePath: `/nix/store/${hashPart(c)}-${c}`,
    narFileId,
    narHash: fileHash('0'),
    narSize: 10,
    deriver: null,
    ca: null,
    sigs: [],
    narinfo: '',
    references: refs.map(r => ({ hashPart: hashPart(r), baseName: `${hashPart(r)}-${r}` }))
  })
}

async function fixture (): Promise<OpenCache> {
  const cache = await openCache(loadConfig(await cacheConfig({ dataDir: tempDir('narwhal-remove-') }), {}))
  // a <- b <- c (c references b references a); d alone; b and d share one NAR file.
  const fa = await addNarFile(cache, 'a')
  const fb = await addNarFile(cache, 'b')
  const fc = await addNarFile(cache, 'c')
  await addNarinfo(cache, 'a', fa, ['a'])
  await addNarinfo(cache, 'b', fb, ['a', 'b'])
  await addNarinfo(cache, 'c', fc, ['b'])
  await addNarinfo(cache, 'd', fb, [])
  return cache
}

test('removing a path removes its referrers, transitively, and the NAR files only they named', async () => {
  const cache = await fixture()
  const removal = await removeNarinfos(cache, [hashPart('a')])
  assert.deepEqual(removal.storePaths.sort(), ['a', 'b', 'c'].map(c => `/nix/store/${hashPart(c)}-${c}`))
  // b's NAR file is still named by d, so only a's and c's go.
  assert.deepEqual(removal.narFiles.map(f => f.fileHash).sort(), [fileHash('a'), fileHash('c')])
  assert.equal(removal.bytes, 20)
  assert.equal(await cache.metadata.narinfos.has(hashPart('a')), false)
  assert.equal(await cache.metadata.narinfos.has(hashPart('c')), false)
  assert.equal(await cache.metadata.narinfos.has(hashPart('d')), true)
  assert.equal(await holds(cache, 'a'), false)
  assert.equal(await holds(cache, 'b'), true)
  assert.notEqual(await cache.metadata.narFiles.get(fileHash('b')), undefined)
})

test('a dry run reports the same removal and changes nothing', async () => {
  const cache = await fixture()
  const planned = await removeNarinfos(cache, [hashPart('b')], { dryRun: true })
  assert.deepEqual(planned.storePaths.length, 2)
  assert.equal(await cache.metadata.narinfos.count(), 4)
  assert.equal(await holds(cache, 'c'), true)
  const done = await removeNarinfos(cache, [hashPart('b')])
  assert.deepEqual(done, planned)
  assert.equal(await cache.metadata.narinfos.count(), 2)
})

test('unnamed NAR files go only after their grace period; unrecorded files only without a row', async () => {
  const cache = await fixture()
  const now = Date.now()
  await addNarFile(cache, 'e', now - 10_000)
  await addNarFile(cache, 'f', now)
  const removal = await removeUnnamedNarFiles(cache, now - 5_000)
  assert.deepEqual(removal.narFiles.map(f => f.fileHash), [fileHash('e')])
  assert.equal(await holds(cache, 'f'), true)

  assert.equal(await removeUnrecordedNarFile(cache, fileHash('f')), false)
  assert.equal(await holds(cache, 'f'), true)
  await putObject(cache, 'g', 'junk')
  assert.equal(await removeUnrecordedNarFile(cache, fileHash('g')), true)
  assert.equal(await holds(cache, 'g'), false)
})

test('an upload that crashed before its NAR went live is collected after an hour; a young one is left alone', async () => {
  const cache = await fixture()
  const now = Date.now()
  const facts = (c: string): NarFileFacts => ({ fileHash: fileHash(c), fileSize: 10, compression: 'none', narHash: fileHash(c), narSize: 10 })
  assert.equal((await cache.metadata.narFiles.claim(facts('p'), now - PENDING_GRACE_MS - 1000)).kind, 'pending')
  assert.equal((await cache.metadata.narFiles.claim(facts('q'), now - 1000)).kind, 'pending')
  await putObject(cache, 'p', 'x'.repeat(10))
  const removal = await removeUnnamedNarFiles(cache, now - 5_000, { now })
  assert.deepEqual(removal.narFiles.map(f => f.fileHash), [fileHash('p')])
  assert.equal(await holds(cache, 'p'), false)
  assert.equal(await cache.metadata.narFiles.get(fileHash('p')), undefined)
  assert.equal((await cache.metadata.narFiles.get(fileHash('q')))?.state, 'pending')
})

test('a removal a crash interrupted (a row left deleting) is finished by the next one, and only then can the NAR go live again', async () => {
  const cache = await fixture()
  await addNarFile(cache, 'e', Date.now() - 10_000)
  const [marked] = await cache.metadata.narFiles.markUnnamedDeleting(Date.now() - 5_000, 0)
  assert.equal(marked?.fileHash, fileHash('e'))
  // The crash: neither the file nor the row went. An upload of the same NAR must wait.
  assert.equal((await cache.metadata.narFiles.claim(marked, Date.now())).kind, 'deleting')
  // peekLive may answer undefined (only get can tell) on a store that does not remember every row.
  assert.equal(cache.metadata.narFiles.peekLive(fileHash('e')) ?? null, null, 'a NAR being deleted is not served')
  assert.equal((await cache.metadata.narFiles.get(fileHash('e')))?.state, 'deleting')
  const removal = await removeUnnamedNarFiles(cache, 0)
  assert.deepEqual(removal.narFiles.map(f => f.fileHash), [fileHash('e')])
  assert.equal(await holds(cache, 'e'), false)
  assert.equal((await cache.metadata.narFiles.claim(marked, Date.now())).kind, 'pending')
})
