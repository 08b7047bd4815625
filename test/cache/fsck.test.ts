/**
 * The checks and repairs of `narwhal fsck`, on a real data folder with real (xz-compressed) NARs:
 * each kind of damage is found and named, --repair removes the damaged path with everything whose
 * closure it breaks (and nothing else), files an upload may still be writing are left alone, and
 * a repaired cache checks clean.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { existsSync, mkdirSync, openSync, readSync, truncateSync, unlinkSync, utimesSync, writeFileSync, writeSync, closeSync } from 'node:fs'
import path from 'node:path'
import { Readable } from 'node:stream'
import { checkCache, repairCache, type FsckReport, type ProblemKind } from '../../src/cache/fsck.js'
import { openCache, type OpenCache } from '../../src/cache/open-cache.js'
import { loadConfig } from '../../src/config/config.js'
import { extensionFor } from '../../src/nix/compression.js'
import { formatNarInfo } from '../../src/nix/narinfo.js'
import { decodeNix32 } from '../../src/nix/nix32.js'
import { dumpPath } from '../../src/pusher/nar-writer.js'
import { createCompressor } from '../../src/nix/codecs.js'
import { storeNar } from '../../src/cache/store-nar.js'
import { sqliteOnly, cacheConfig } from '../helpers/backend.js'
import { collect, fileHashOf } from '../helpers/upload.js'
import { tempDir } from '../helpers/nix.js'
import { sqliteDb } from '../helpers/sqlite.js'
import { insertNarinfo } from '../helpers/metadata.js'
import { narFilePath } from '../../src/storage/layout.js'

const HOUR = 60 * 60 * 1000

interface Fixture {
  cache: OpenCache
  /** Store path, hash part and NAR file hash of each path, by letter. */
  paths: Record<string, { storePath: string, hashPart: string, fileHash: string }>
}

/** A fake but well-formed hash part from one letter. */
const hashPartOf = (c: string): string => c.repeat(32)

/** Stores a path the way an upload does: its NAR verified by ingestNar, its narinfo rendered. */
async function addPath (cache: OpenCache, c: string, refs: string[]): Promise<{ storePath: string, hashPart: string, fileHash: string }> {
  const dir = tempDir('narwhal-fsck-path-')
  writeFileSync(path.join(dir, 'content'), randomBytes(20_000))
  const nar = await collect(Readable.from(dumpPath(dir)))
  const compressed = await collect(Readable.from([nar]).pipe(createCompressor('xz')))
  const fileHash = fileHashOf(compressed)
  const ingested = await storeNar(Readable.from([compressed]), fileHash, cache, { maxBytes: 1 << 30, maxNarSize: 1 << 30, declaredBytes: 0, reserveBytes: 0 })
  const row = await cache.metadata.narFiles.get(ingested.fileHash)
  assert.ok(row !== undefined)
  const hashPart = hashPartOf(c)
  const storePath = `/nix/store/${hashPart}-path-${c}`
  const references = refs.map(r => `${hashPartOf(r)}-path-${r}`)
  const narinfo = formatNarInfo({
    storePath,
    url: `nar/${fileHash}.nar${extensionFor(row.compression)}`,
    compression: row.compression,
    fileHash: decodeNix32(row.fileHash),
    fileSize: BigInt(row.fileSize),
    narHash: decodeNix32(row.narHash),
    narSize: BigInt(row.narSize),
    references,
    sigs: []
  })
  await insertNarinfo(cache.metadata, {
    hashPart,
    storePath,
    narFileId: row.id,
    narHash: row.narHash,
    narSize: row.narSize,
    deriver: null,
    ca: null,
    sigs: [],
    narinfo,
    references: refs.map(r => ({ hashPart: hashPartOf(r), baseName: `${hashPartOf(r)}-path-${r}` }))
  })
  return { storePath, hashPart, fileHash }
}

/** a <- b <- c (c references b, b references a and itself); d stands alone. */
async function fixture (): Promise<Fixture> {
  const cache = await openCache(loadConfig(await cacheConfig({ dataDir: tempDir('narwhal-fsck-') }), {}))
  const paths = {
    a: await addPath(cache, 'a', []),
    b: await addPath(cache, 'b', ['a', 'b']),
    c: await addPath(cache, 'c', ['b']),
    d: await addPath(cache, 'd', [])
  }
  return { cache, paths }
}

function narFile (f: Fixture, c: string): string {
  return narFilePath(f.cache.layout, f.paths[c]?.fileHash ?? '')
}

async function check (f: Fixture, verifyContent = false): Promise<FsckReport> {
  return await checkCache(f.cache, { verifyContent, graceMs: HOUR })
}

function kinds (report: FsckReport): Array<[ProblemKind, string]> {
  return report.problems.map(p => [p.kind, p.subject])
}

async function remaining (f: Fixture): Promise<string[]> {
  const held: string[] = []
  for (const [c, p] of Object.entries(f.paths)) if (await f.cache.metadata.narinfos.has(p.hashPart)) held.push(c)
  return held
}

/** Makes a file look untouched for two hours. */
function age (file: string): void {
  const then = new Date(Date.now() - 2 * HOUR)
  utimesSync(file, then, then)
}

test('a healthy cache checks clean, sizes only and with content verified', async () => {
  const f = await fixture()
  const quick = await check(f)
  assert.deepEqual(quick.problems, [])
  assert.equal(quick.checked.narinfos, 4)
  assert.equal(quick.checked.narFiles, 4)
  const full = await check(f, true)
  assert.deepEqual(full.problems, [])
  assert.equal(full.checked.contentVerified, true)
})

test('a missing NAR file of a leaf: --repair removes the leaf and its referrers, not the rest', sqliteOnly('damages or inspects files in store/nar and store/tmp by hand'), async () => {
  const f = await fixture()
  unlinkSync(narFile(f, 'a'))
  const report = await check(f)
  assert.deepEqual(kinds(report), [['nar-file-missing', narFile(f, 'a')]])
  assert.match(report.problems[0]?.reason ?? '', new RegExp(`missing \\(named by ${f.paths.a?.storePath ?? ''}\\)`))

  const planned = await repairCache(f.cache, report.problems, { dryRun: true })
  assert.deepEqual(planned.removal.storePaths, ['a', 'b', 'c'].map(c => f.paths[c]?.storePath))
  assert.deepEqual(await remaining(f), ['a', 'b', 'c', 'd'], 'a dry run changes nothing')

  const repair = await repairCache(f.cache, report.problems)
  assert.deepEqual(repair.removal.storePaths, planned.removal.storePaths)
  assert.deepEqual(repair.removal.narFiles.map(n => n.fileHash).sort(), ['a', 'b', 'c'].map(c => f.paths[c]?.fileHash).sort())
  assert.deepEqual(await remaining(f), ['d'])
  assert.equal(existsSync(narFile(f, 'b')), false, 'the referrers\' NAR files go too')
  assert.equal(await f.cache.metadata.narFiles.get(f.paths.a?.fileHash ?? ''), undefined, 'the row goes, so a re-upload stores the NAR again')
  assert.deepEqual((await check(f, true)).problems, [])
})

test('a truncated NAR file is found by its size; a flipped byte only with --verify-content', sqliteOnly('damages or inspects files in store/nar and store/tmp by hand'), async () => {
  const f = await fixture()
  truncateSync(narFile(f, 'b'), 100)
  const fd = openSync(narFile(f, 'c'), 'r+')
  const byte = Buffer.alloc(1)
  readSync(fd, byte, 0, 1, 500)
  writeSync(fd, Buffer.from([byte[0]! ^ 0xff]), 0, 1, 500)
  closeSync(fd)

  const quick = await check(f)
  assert.deepEqual(kinds(quick), [['nar-file-size', narFile(f, 'b')]])
  assert.match(quick.problems[0]?.reason ?? '', /the file has 100 bytes, \d+ recorded/)

  const full = await check(f, true)
  assert.deepEqual(kinds(full), [['nar-file-size', narFile(f, 'b')], ['nar-file-content', narFile(f, 'c')]])
  assert.match(full.problems[1]?.reason ?? '', /does not read back as a NAR|hash to sha256:\S+, not to its name/)

  await repairCache(f.cache, full.problems)
  assert.deepEqual(await remaining(f), ['a', 'd'])
  assert.deepEqual((await check(f, true)).problems, [])
})

test('files without rows: old ones are removed, young ones are taken for uploads in flight', sqliteOnly('damages or inspects files in store/nar and store/tmp by hand'), async () => {
  const f = await fixture()
  const junk = randomBytes(100)
  const old = narFilePath(f.cache.layout, fileHashOf(junk))
  mkdirSync(path.dirname(old), { recursive: true })
  writeFileSync(old, junk)
  age(old)
  const youngBytes = randomBytes(100)
  const young = narFilePath(f.cache.layout, fileHashOf(youngBytes))
  mkdirSync(path.dirname(young), { recursive: true })
  writeFileSync(young, youngBytes)
  const oldPart = path.join(f.cache.layout.tmpDir, 'crashed.part')
  writeFileSync(oldPart, 'half an upload')
  age(oldPart)
  const livePart = path.join(f.cache.layout.tmpDir, 'live.part')
  writeFileSync(livePart, 'an upload in flight')

  const report = await check(f)
  assert.deepEqual(kinds(report), [['unrecorded-nar-file', old], ['stale-temp-file', oldPart]])
  assert.deepEqual(report.inFlight.sort(), [young, livePart].sort())
  const repair = await repairCache(f.cache, report.problems)
  assert.deepEqual(repair.deletedFiles, [old, oldPart])
  assert.deepEqual(repair.removal.storePaths, [])
  assert.equal(existsSync(old), false)
  assert.equal(existsSync(oldPart), false)
  assert.equal(existsSync(young), true)
  assert.equal(existsSync(livePart), true)
  assert.deepEqual(await remaining(f), ['a', 'b', 'c', 'd'])
  assert.deepEqual((await check(f)).problems, [])
})

test('misplaced and oddly named files are stray; a stray directory is left for a person', sqliteOnly('damages or inspects files in store/nar and store/tmp by hand'), async () => {
  const f = await fixture()
  const hash = f.paths.a?.fileHash ?? ''
  const wrongShard = hash.startsWith('00') ? '11' : '00'
  const misplaced = path.join(f.cache.layout.narDir, wrongShard, hash)
  mkdirSync(path.dirname(misplaced), { recursive: true })
  writeFileSync(misplaced, 'copy')
  const oddName = path.join(path.dirname(narFile(f, 'a')), 'notes.txt')
  writeFileSync(oddName, 'hello')
  const oddDir = path.join(f.cache.layout.narDir, 'backup')
  mkdirSync(oddDir)

  const report = await check(f)
  assert.deepEqual(kinds(report).sort(), [['stray-file', misplaced], ['stray-file', oddName], ['stray-file', oddDir]].sort())
  const repair = await repairCache(f.cache, report.problems)
  assert.deepEqual(repair.deletedFiles.sort(), [misplaced, oddName].sort())
  assert.deepEqual(repair.unrepaired.map(p => p.subject), [oddDir])
  assert.equal(existsSync(oddDir), true)
  assert.deepEqual(await remaining(f), ['a', 'b', 'c', 'd'])
})

test('database damage: a narinfo without its NAR file row, a missing reference, a narinfo text that disagrees', sqliteOnly('edits SQLite rows by hand (foreign keys off)'), async () => {
  const f = await fixture()
  const db = sqliteDb(f.cache.metadata)
  // The foreign key forbids the first two; a hand edit with it switched off does not.
  db.pragma('foreign_keys = OFF')
  db.prepare('DELETE FROM nar_files WHERE file_hash = ?').run(f.paths.d?.fileHash)
  db.prepare('DELETE FROM narinfos WHERE hash_part = ?').run(f.paths.a?.hashPart)
  db.pragma('foreign_keys = ON')
  db.prepare("UPDATE narinfos SET narinfo = replace(narinfo, 'NarSize: ', 'NarSize: 1') WHERE hash_part = ?").run(f.paths.c?.hashPart)

  const report = await check(f)
  const found = kinds(report)
  assert.deepEqual(found.filter(([k]) => k !== 'unrecorded-nar-file'), [
    ['narinfo-without-nar-file', f.paths.d?.storePath],
    ['missing-reference', f.paths.b?.storePath],
    ['narinfo-inconsistent', f.paths.c?.storePath]
  ])
  assert.match(report.problems[1]?.reason ?? '', /references \/nix\/store\/a{32}-path-a, which the cache does not hold/)
  assert.match(report.problems[2]?.reason ?? '', /NarSize: text 1\d+, row \d+, NAR file \d+/)
  // d's NAR file lost its row just now: young, so in flight, not yet unrecorded. a's NAR file
  // keeps its row, named by no narinfo now: garbage collection's business, not damage.
  assert.deepEqual(report.inFlight, [narFile(f, 'd')])

  const repair = await repairCache(f.cache, report.problems)
  assert.deepEqual(repair.removal.storePaths, ['b', 'c', 'd'].map(c => f.paths[c]?.storePath))
  assert.deepEqual(await remaining(f), [])
  const after = await checkCache(f.cache, { verifyContent: true, graceMs: 0 })
  assert.deepEqual(kinds(after), [['unrecorded-nar-file', narFile(f, 'd')]])
  await repairCache(f.cache, after.problems)
  assert.deepEqual((await checkCache(f.cache, { verifyContent: true, graceMs: 0 })).problems, [])
})

test('a NAR file row no narinfo names, whose file is gone, is dropped so a re-upload stores it again', sqliteOnly('edits SQLite rows by hand (foreign keys off) and removes the file'), async () => {
  const f = await fixture()
  const db = sqliteDb(f.cache.metadata)
  db.prepare('DELETE FROM narinfos WHERE hash_part = ?').run(f.paths.d?.hashPart)
  unlinkSync(narFile(f, 'd'))
  const report = await check(f)
  assert.deepEqual(kinds(report), [['nar-file-missing', narFile(f, 'd')]])
  assert.match(report.problems[0]?.reason ?? '', /named by no narinfo/)
  const repair = await repairCache(f.cache, report.problems)
  assert.deepEqual(repair.removal.storePaths, [])
  assert.deepEqual(repair.removal.narFiles.map(n => n.fileHash), [f.paths.d?.fileHash])
  assert.equal(await f.cache.metadata.narFiles.get(f.paths.d?.fileHash ?? ''), undefined)
})

test('a store layout of another version stops fsck before it judges anything', sqliteOnly('writes the folder\'s store/VERSION'), async () => {
  const f = await fixture()
  writeFileSync(f.cache.layout.versionFile, '2\n')
  await assert.rejects(check(f), /store layout version 2 .* is not supported/)
})
