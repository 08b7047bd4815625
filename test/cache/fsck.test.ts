/**
 * The checks and repairs of `narwhal fsck`, on a real data folder with real (xz-compressed) NARs:
 * each kind of damage is found and named, --repair removes the damaged path with everything whose
 * closure it breaks (and nothing else), files an upload may still be writing are left alone, and
 * a repaired cache checks clean.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { existsSync, mkdirSync, utimesSync, writeFileSync } from 'node:fs'
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
import { holdsObject, putNar, readNar, removeNar, replaceNar } from '../helpers/blobs.js'
import type { NarFileRow } from '../../src/db/metadata-store.js'
import type { NarName } from '../../src/storage/blob-store.js'

const HOUR = 60 * 60 * 1000

interface Fixture {
  cache: OpenCache
  /** Store path, hash part and NAR object (file hash, compression) of each path, by letter. */
  paths: Record<string, { storePath: string, hashPart: string, fileHash: string, compression: string }>
}

/** A fake but well-formed hash part from one letter. */
const hashPartOf = (c: string): string => c.repeat(32)

/** Stores a new random NAR, xz-compressed, the way an upload does (verified by ingestNar); its live row. */
async function addNar (cache: OpenCache): Promise<NarFileRow> {
  const dir = tempDir('narwhal-fsck-path-')
  writeFileSync(path.join(dir, 'content'), randomBytes(20_000))
  const nar = await collect(Readable.from(dumpPath(dir)))
  const compressed = await collect(Readable.from([nar]).pipe(createCompressor('xz')))
  const ingested = await storeNar(Readable.from([compressed]), fileHashOf(compressed), cache, { maxBytes: 1 << 30, maxNarSize: 1 << 30, declaredBytes: 0, reserveBytes: 0 })
  const row = await cache.metadata.narFiles.get(ingested.fileHash)
  assert.ok(row !== undefined)
  return row
}

/** Stores a path the way an upload does: its NAR verified by ingestNar, its narinfo rendered. */
async function addPath (cache: OpenCache, c: string, refs: string[]): Promise<Fixture['paths'][string]> {
  const row = await addNar(cache)
  const fileHash = row.fileHash
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
  // As acceptNarinfo does: a bucket read as a Nix cache holds the narinfo too (a no-op in the folder).
  await cache.blobs.publishNarinfo(hashPart, narinfo)
  return { storePath, hashPart, fileHash, compression: row.compression }
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

/** The NAR object of path `c`. */
function narOf (f: Fixture, c: string): NarName {
  const p = f.paths[c]
  assert.ok(p !== undefined)
  return { fileHash: p.fileHash, compression: p.compression }
}

/** Where the NAR object of path `c` is, as fsck names it: a file in the folder, a key in a bucket. */
function narFile (f: Fixture, c: string): string {
  return f.cache.blobs.where(narOf(f, c))
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

test('a missing NAR file of a leaf: --repair removes the leaf and its referrers, not the rest', async () => {
  const f = await fixture()
  await removeNar(f.cache.blobs, narOf(f, 'a'))
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
  assert.equal(await holdsObject(f.cache.blobs, narOf(f, 'b')), false, 'the referrers\' NAR files go too')
  assert.equal(await f.cache.metadata.narFiles.get(f.paths.a?.fileHash ?? ''), undefined, 'the row goes, so a re-upload stores the NAR again')
  assert.deepEqual((await check(f, true)).problems, [])
})

test('a truncated NAR file is found by its size; a flipped byte only with --verify-content', async () => {
  const f = await fixture()
  const b = await readNar(f.cache.blobs, narOf(f, 'b'))
  assert.ok(b !== undefined)
  await replaceNar(f.cache.blobs, narOf(f, 'b'), b.subarray(0, 100))
  const c = await readNar(f.cache.blobs, narOf(f, 'c'))
  assert.ok(c !== undefined)
  c[500] = c[500]! ^ 0xff
  await replaceNar(f.cache.blobs, narOf(f, 'c'), c)

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

test('objects without rows: old ones are removed, young ones are taken for uploads in flight', async () => {
  const f = await fixture()
  const junk = { fileHash: fileHashOf(randomBytes(100)), compression: 'none' }
  await putNar(f.cache.blobs, junk, randomBytes(100))
  // A bucket keeps whole seconds: the young object is written more than a second after the old one.
  await new Promise(resolve => setTimeout(resolve, 1100))
  const youngBytes = randomBytes(100)
  const young = { fileHash: fileHashOf(youngBytes), compression: 'none' }
  await putNar(f.cache.blobs, young, youngBytes)
  const written = new Map<string, number>()
  for await (const blob of f.cache.blobs.list()) written.set(blob.fileHash, blob.modifiedAt)
  const youngAt = written.get(young.fileHash)
  assert.ok(youngAt !== undefined && (written.get(junk.fileHash) ?? Infinity) < youngAt - 500)
  // Judged at the young object's write: the grace period covers it, not the old one.
  const at = { now: youngAt, graceMs: 500 }
  // Named as list() finds them: `nar/<hash>.nar` is uncompressed or gzip, so a bucket does not say which.
  const listed = (name: NarName): string => f.cache.blobs.where({ fileHash: name.fileHash, compression: undefined })
  const old = listed(junk)

  const report = await checkCache(f.cache, { verifyContent: false, ...at })
  assert.deepEqual(kinds(report), [['unrecorded-nar-file', old]])
  assert.deepEqual(report.inFlight, [listed(young)])
  const repair = await repairCache(f.cache, report.problems)
  assert.deepEqual(repair.deletedFiles, [old])
  assert.deepEqual(repair.removal.storePaths, [])
  assert.equal(await holdsObject(f.cache.blobs, junk), false)
  assert.equal(await holdsObject(f.cache.blobs, young), true)
  assert.deepEqual(await remaining(f), ['a', 'b', 'c', 'd'])
  assert.deepEqual((await check(f)).problems, [])
})

test('temp files: a stale one in store/tmp is removed, a young one is an upload in flight', sqliteOnly('makes store/tmp leftovers by hand (a bucket\'s are unfinished multipart uploads)'), async () => {
  const f = await fixture()
  const oldPart = path.join(f.cache.layout.tmpDir, 'crashed.part')
  writeFileSync(oldPart, 'half an upload')
  age(oldPart)
  const livePart = path.join(f.cache.layout.tmpDir, 'live.part')
  writeFileSync(livePart, 'an upload in flight')

  const report = await check(f)
  assert.deepEqual(kinds(report), [['stale-temp-file', oldPart]])
  assert.deepEqual(report.inFlight, [livePart])
  const repair = await repairCache(f.cache, report.problems)
  assert.deepEqual(repair.deletedFiles, [oldPart])
  assert.deepEqual(repair.removal.storePaths, [])
  assert.equal(existsSync(oldPart), false)
  assert.equal(existsSync(livePart), true)
  assert.deepEqual(await remaining(f), ['a', 'b', 'c', 'd'])
  assert.deepEqual((await check(f)).problems, [])
})

test('misplaced and oddly named files are stray; a stray directory is left for a person', sqliteOnly('about the folder\'s layout: files in the wrong shard, odd names, directories in store/nar'), async () => {
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

test('a narinfo text that disagrees with its rows is found; --repair removes it with its referrers', async () => {
  const f = await fixture()
  const c = await f.cache.metadata.narinfos.get(f.paths.c?.hashPart ?? '')
  assert.ok(c !== undefined)
  // The one write that replaces a stored narinfo's text (a signature merge), given a wrong text.
  const altered = c.narinfo.replace('NarSize: ', 'NarSize: 1')
  const merged = await f.cache.metadata.narinfos.mergeSignatures(c.id, c.sigs, c.sigs, altered,
    { acceptedAt: Date.now(), tokenId: null, tokenName: null, keyNames: [], clientAddress: null, upstream: null })
  assert.equal(merged.kind, 'merged')
  await f.cache.blobs.publishNarinfo(c.hashPart, altered) // as acceptNarinfo publishes a merge

  const report = await check(f, true)
  assert.deepEqual(kinds(report), [['narinfo-inconsistent', c.storePath]])
  assert.match(report.problems[0]?.reason ?? '', /NarSize: text 1\d+, row \d+, NAR file \d+/)
  const repair = await repairCache(f.cache, report.problems)
  assert.deepEqual(repair.removal.storePaths, [c.storePath])
  assert.deepEqual(await remaining(f), ['a', 'b', 'd'])
  assert.deepEqual((await check(f, true)).problems, [])
})

test('database damage: a narinfo without its NAR file row, a missing reference, a narinfo text that disagrees', sqliteOnly('edits SQLite rows by hand with foreign keys off: damage no metadata store interface can make'), async () => {
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

test('a NAR file row no narinfo names, whose file is gone, is dropped so a re-upload stores it again', async () => {
  const f = await fixture()
  // Uploaded, its narinfo never came (or gc took it), then its object was lost.
  const lone = await addNar(f.cache)
  await removeNar(f.cache.blobs, lone)
  const report = await check(f)
  assert.deepEqual(kinds(report), [['nar-file-missing', f.cache.blobs.where(lone)]])
  assert.match(report.problems[0]?.reason ?? '', /named by no narinfo/)
  const repair = await repairCache(f.cache, report.problems)
  assert.deepEqual(repair.removal.storePaths, [])
  assert.deepEqual(repair.removal.narFiles.map(n => n.fileHash), [lone.fileHash])
  assert.equal(await f.cache.metadata.narFiles.get(lone.fileHash), undefined)
  assert.deepEqual(await remaining(f), ['a', 'b', 'c', 'd'])
})

test('a store layout of another version stops fsck before it judges anything', sqliteOnly('writes the folder\'s store/VERSION'), async () => {
  const f = await fixture()
  writeFileSync(f.cache.layout.versionFile, '2\n')
  await assert.rejects(check(f), /store layout version 2 .* is not supported/)
})
