/**
 * The removal rules shared by fsck and gc: a narinfo goes with its referrers, a NAR file goes
 * only when no narinfo names it, and a dry run changes nothing.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync, mkdirSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { loadConfig } from '../../src/config/config.js'
import { openCache, type OpenCache } from '../../src/cache/open-cache.js'
import { removeNarinfos, removeUnnamedNarFiles, removeUnrecordedNarFile } from '../../src/cache/remove-paths.js'
import { tempDir } from '../helpers/nix.js'
import { narFilePath } from '../../src/storage/layout.js'

/** A fake but well-formed 32-char hash part / 52-char file hash from one letter. */
const hashPart = (c: string): string => c.repeat(32)
const fileHash = (c: string): string => c.repeat(52)

function addNarFile (cache: OpenCache, c: string, createdAt = Date.now()): number {
  const file = narFilePath(cache.layout, fileHash(c))
  mkdirSync(path.dirname(file), { recursive: true })
  writeFileSync(file, 'x'.repeat(10))
  return cache.metadata.recordNarFile({ fileHash: fileHash(c), fileSize: 10, compression: 'none', narHash: fileHash(c), narSize: 10 }, createdAt).id
}

function addNarinfo (cache: OpenCache, c: string, narFileId: number, refs: string[]): void {
  cache.metadata.insertNarinfo({
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

function fixture (): OpenCache {
  const cache = openCache(loadConfig({ dataDir: tempDir('narwhal-remove-') }, {}))
  // a <- b <- c (c references b references a); d alone; b and d share one NAR file.
  const fa = addNarFile(cache, 'a')
  const fb = addNarFile(cache, 'b')
  const fc = addNarFile(cache, 'c')
  addNarinfo(cache, 'a', fa, ['a'])
  addNarinfo(cache, 'b', fb, ['a', 'b'])
  addNarinfo(cache, 'c', fc, ['b'])
  addNarinfo(cache, 'd', fb, [])
  return cache
}

test('removing a path removes its referrers, transitively, and the NAR files only they named', async () => {
  const cache = fixture()
  const removal = await removeNarinfos(cache.metadata, cache.blobs, [hashPart('a')])
  assert.deepEqual(removal.storePaths.sort(), ['a', 'b', 'c'].map(c => `/nix/store/${hashPart(c)}-${c}`))
  // b's NAR file is still named by d, so only a's and c's go.
  assert.deepEqual(removal.narFiles.map(f => f.fileHash).sort(), [fileHash('a'), fileHash('c')])
  assert.equal(removal.bytes, 20)
  assert.equal(cache.metadata.hasNarinfo(hashPart('a')), false)
  assert.equal(cache.metadata.hasNarinfo(hashPart('c')), false)
  assert.equal(cache.metadata.hasNarinfo(hashPart('d')), true)
  assert.equal(existsSync(narFilePath(cache.layout, fileHash('a'))), false)
  assert.equal(existsSync(narFilePath(cache.layout, fileHash('b'))), true)
  assert.notEqual(cache.metadata.narFile(fileHash('b')), undefined)
})

test('a dry run reports the same removal and changes nothing', async () => {
  const cache = fixture()
  const planned = await removeNarinfos(cache.metadata, cache.blobs, [hashPart('b')], { dryRun: true })
  assert.deepEqual(planned.storePaths.length, 2)
  assert.equal(cache.metadata.narinfoCount(), 4)
  assert.equal(existsSync(narFilePath(cache.layout, fileHash('c'))), true)
  const done = await removeNarinfos(cache.metadata, cache.blobs, [hashPart('b')])
  assert.deepEqual(done, planned)
  assert.equal(cache.metadata.narinfoCount(), 2)
})

test('unnamed NAR files go only after their grace period; unrecorded files only without a row', async () => {
  const cache = fixture()
  const now = Date.now()
  addNarFile(cache, 'e', now - 10_000)
  addNarFile(cache, 'f', now)
  const removal = await removeUnnamedNarFiles(cache.metadata, cache.blobs, now - 5_000)
  assert.deepEqual(removal.narFiles.map(f => f.fileHash), [fileHash('e')])
  assert.equal(existsSync(narFilePath(cache.layout, fileHash('f'))), true)

  assert.equal(await removeUnrecordedNarFile(cache.metadata, cache.blobs, fileHash('f')), false)
  assert.equal(existsSync(narFilePath(cache.layout, fileHash('f'))), true)
  const stray = narFilePath(cache.layout, fileHash('g'))
  mkdirSync(path.dirname(stray), { recursive: true })
  writeFileSync(stray, 'junk')
  assert.equal(await removeUnrecordedNarFile(cache.metadata, cache.blobs, fileHash('g')), true)
  assert.equal(existsSync(stray), false)
})
