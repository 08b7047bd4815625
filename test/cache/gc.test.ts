/**
 * Garbage collection policy on a fabricated cache (rows and NAR objects made directly through the stores, with chosen
 * upload and use times): least recently used first by effective last use, closures never broken,
 * pins with expiry, the grace period of unnamed NAR files (restarted by each upload of the NAR),
 * dry runs, max-size, and re-checks of the plan while the cache keeps changing.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { mkdirSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { Readable } from 'node:stream'
import { loadConfig } from '../../src/config/config.js'
import { collectGarbage, type GcOptions, type GcReport } from '../../src/cache/gc.js'
import { effectiveLastUse } from '../../src/cache/gc-plan.js'
import { startGcSchedule } from '../../src/cache/gc-schedule.js'
import { openCache, type OpenCache } from '../../src/cache/open-cache.js'
import { holdsNar, storeNar } from '../../src/cache/store-nar.js'
import { encodeNix32 } from '../../src/nix/nix32.js'
import { dumpPath } from '../../src/pusher/nar-writer.js'
import { checkReupload, type IngestOptions } from '../../src/storage/nar-ingest.js'
import { cacheConfig } from '../helpers/backend.js'
import { tempDir } from '../helpers/nix.js'
import { eventually } from '../helpers/upload.js'
import { insertNarinfo, recordNarFile } from '../helpers/metadata.js'
import { holdsObject, putNar, readNar, removeNar } from '../helpers/blobs.js'

const DAY = 86_400_000
const NOW = Date.now()
const daysAgo = (d: number): number => NOW - d * DAY

const hashPart = (name: string): string => encodeNix32(createHash('sha256').update(name).digest().subarray(0, 20))
const fileHash = (name: string): string => encodeNix32(createHash('sha256').update('file:' + name).digest())
const storePath = (name: string): string => `/nix/store/${hashPart(name)}-${name}`

interface PathSpec {
  refs?: string[]
  /** Days ago the NAR and narinfo were uploaded. */
  uploaded: number
  /** Days ago the narinfo was last read, if ever. */
  narinfoRead?: number
  /** Days ago the NAR was last downloaded, if ever. */
  narRead?: number
  /** Name of another path whose NAR file this one shares. */
  sharesNarOf?: string
  size?: number
  /** The URL of the upstream it was pulled from (its verified narinfo names the same NAR file). */
  pulledFrom?: string
}

async function fabricate (spec: Record<string, PathSpec>, options: { unnamed?: Record<string, number> } = {}): Promise<OpenCache> {
  const cache = await openCache(loadConfig(await cacheConfig({ dataDir: tempDir('narwhal-gc-') }), {}))
  const addNarFile = async (name: string, size: number, at: number): Promise<number> => {
    await putNar(cache.blobs, { fileHash: fileHash(name), compression: 'none' }, Buffer.alloc(size))
    return (await recordNarFile(cache.metadata, { fileHash: fileHash(name), fileSize: size, compression: 'none', narHash: fileHash(name), narSize: size }, at)).id
  }
  // References first, as uploads must come.
  for (const [name, p] of Object.entries(spec)) {
    const fileId = p.sharesNarOf !== undefined
      ? ((await cache.metadata.narFiles.get(fileHash(p.sharesNarOf)))?.id ?? -1)
      : await addNarFile(name, p.size ?? 100, daysAgo(p.uploaded))
    await insertNarinfo(cache.metadata, {
      hashPart: hashPart(name),
      storePath: storePath(name),
      narFileId: fileId,
      narHash: fileHash(name),
      narSize: 100,
      deriver: null,
      ca: null,
      sigs: [],
      narinfo: `StorePath: ${storePath(name)}\n`,
      references: (p.refs ?? []).map(r => ({ hashPart: hashPart(r), baseName: `${hashPart(r)}-${r}` }))
    }, daysAgo(p.uploaded))
    if (p.pulledFrom !== undefined) {
      await cache.metadata.upstreamRecords.insert({
        hashPart: hashPart(name),
        storePath: storePath(name),
        upstream: p.pulledFrom,
        narUrl: `nar/${fileHash(p.sharesNarOf ?? name)}.nar`,
        fileHash: fileHash(p.sharesNarOf ?? name),
        fileSize: p.size ?? 100,
        compression: 'none',
        narHash: fileHash(name),
        narSize: 100,
        references: (p.refs ?? []).map(r => `${hashPart(r)}-${r}`),
        narinfo: `StorePath: ${storePath(name)}\n`,
        createdAt: daysAgo(p.uploaded)
      })
    }
    if (p.narinfoRead !== undefined) await cache.metadata.retention.touch([hashPart(name)], [], daysAgo(p.narinfoRead))
    if (p.narRead !== undefined) await cache.metadata.retention.touch([], [fileHash(p.sharesNarOf ?? name)], daysAgo(p.narRead))
  }
  for (const [name, age] of Object.entries(options.unnamed ?? {})) await addNarFile(name, 100, NOW - age)
  return cache
}

const policy = (p: Partial<GcOptions> = {}): GcOptions =>
  ({ maxSize: null, olderThan: null, keepRecent: 0, unnamedNarGrace: DAY, trigger: 'cli', now: NOW, ...p })

async function present (cache: OpenCache): Promise<string[]> {
  return (await cache.metadata.narinfos.page(0, 1000)).map(n => n.storePath).sort()
}

/** Whether the cache's blob store holds the object of a fabricated (uncompressed) NAR file. */
const holds = async (cache: OpenCache, hash: string): Promise<boolean> => await holdsObject(cache.blobs, { fileHash: hash, compression: 'none' })

const names = (...n: string[]): string[] => n.map(storePath).sort()

/** Every remaining narinfo can be served whole: its references, its NAR row and its object exist. */
async function assertClosed (cache: OpenCache): Promise<void> {
  assert.deepEqual(await cache.metadata.narinfos.missingReferences(), [], 'no remaining narinfo names a reference the cache lacks')
  assert.deepEqual(await cache.metadata.narinfos.withoutLiveNarFile(), [], 'every remaining narinfo has its live NAR row')
  for (const narinfo of await cache.metadata.narinfos.page(0, 1000)) {
    const file = await cache.metadata.narFiles.getById(narinfo.narFileId)
    assert.ok(file !== undefined && await holdsObject(cache.blobs, file), `${narinfo.storePath} has its NAR object`)
  }
}

test('older-than goes by effective last use: an old dependency of a path used today stays', async () => {
  const cache = await fabricate({
    lib: { uploaded: 100 },
    app: { uploaded: 100, refs: ['lib'], narinfoRead: 1 },
    old: { uploaded: 100 },
    oldTop: { uploaded: 90, refs: ['old', 'oldTop'], narRead: 50 },
    // Read 10 days ago, but only its narinfo: still use of the path.
    peeked: { uploaded: 100, narinfoRead: 10 }
  })
  const report = await collectGarbage(cache, policy({ olderThan: 30 * DAY }))
  assert.deepEqual([...report.storePaths].sort(), names('old', 'oldTop'))
  assert.deepEqual(await present(cache), names('app', 'lib', 'peeked'))
  assert.equal(report.bytes, 200)
  assert.equal(report.narFiles.length, 2)
  assert.equal(await holds(cache, fileHash('old')), false)
  await assertClosed(cache)
})

test('max-size evicts least recently used first and stops once NAR files fit', async () => {
  const spec: Record<string, PathSpec> = {
    xDep: { uploaded: 30 },
    xTop: { uploaded: 30, refs: ['xDep'], narRead: 10 },
    yDep: { uploaded: 30 },
    yTop: { uploaded: 30, refs: ['yDep'], narRead: 5 },
    zDep: { uploaded: 30 },
    zTop: { uploaded: 30, refs: ['zDep'], narRead: 1 }
  }
  const fits = await fabricate(spec)
  const first = await collectGarbage(fits, policy({ maxSize: 400 }))
  assert.deepEqual([...first.storePaths].sort(), names('xDep', 'xTop'), 'the least recently used closure goes whole')
  assert.equal(first.remainingBytes, 400)
  assert.equal(first.maxSizeReached, true)
  await assertClosed(fits)

  // One byte less: y's top goes too (a referrer before its reference), and y's dependency stays.
  const tighter = await fabricate(spec)
  const second = await collectGarbage(tighter, policy({ maxSize: 399 }))
  assert.deepEqual([...second.storePaths].sort(), names('xDep', 'xTop', 'yTop'))
  assert.deepEqual(await present(tighter), names('yDep', 'zDep', 'zTop'))
  assert.equal(second.remainingBytes, 300)
  await assertClosed(tighter)
})

test('max-size evicts paths pulled from a configured upstream first, never dragging a pushed path along', async () => {
  const UPSTREAM = 'https://cache.example.org'
  const spec: Record<string, PathSpec> = {
    // Pushed, the least recently used of all.
    pushedOld: { uploaded: 30 },
    // Pulled and used more recently than pushedOld: still evicted first, as they can be fetched again.
    pulledA: { uploaded: 30, narRead: 5, pulledFrom: UPSTREAM },
    pulledB: { uploaded: 30, narRead: 4, pulledFrom: UPSTREAM },
    // Pulled, but a pushed path needs it: evicting it would take pushedTop along.
    pulledDep: { uploaded: 30, pulledFrom: UPSTREAM },
    pushedTop: { uploaded: 30, refs: ['pulledDep'], narRead: 3 },
    // Pulled from an upstream no longer configured: it could not be fetched again.
    pulledGone: { uploaded: 30, narRead: 2, pulledFrom: 'https://gone.example.org' }
  }
  const preferring = await fabricate(spec)
  const report = await collectGarbage(preferring, policy({ maxSize: 400, upstreams: [UPSTREAM] }))
  assert.deepEqual([...report.storePaths].sort(), names('pulledA', 'pulledB'), 'the pulled paths no pushed path needs go first')
  assert.equal(report.remainingBytes, 400)
  assert.deepEqual(await present(preferring), names('pulledDep', 'pulledGone', 'pushedOld', 'pushedTop'))
  await assertClosed(preferring)

  // Without upstreams configured the same cache is collected by last use alone.
  const plain = await fabricate(spec)
  const lru = await collectGarbage(plain, policy({ maxSize: 400 }))
  assert.deepEqual([...lru.storePaths].sort(), names('pulledA', 'pushedOld'))

  // Past what the pulled paths free, the rest goes by last use as before.
  const tight = await fabricate(spec)
  const more = await collectGarbage(tight, policy({ maxSize: 300, upstreams: [UPSTREAM] }))
  assert.deepEqual([...more.storePaths].sort(), names('pulledA', 'pulledB', 'pushedOld'))
  await assertClosed(tight)
})

test('max-size keeps paths used within keep-recent and says the limit was not reached', async () => {
  const cache = await fabricate({
    old: { uploaded: 30 },
    fresh: { uploaded: 30, narinfoRead: 0.01 },
    freshDep: { uploaded: 30 },
    freshTop: { uploaded: 0.5, refs: ['freshDep'] }
  })
  const report = await collectGarbage(cache, policy({ maxSize: 0, keepRecent: DAY }))
  assert.deepEqual(report.storePaths, [storePath('old')])
  assert.equal(report.maxSizeReached, false)
  assert.equal(report.remainingBytes, 300)
  assert.deepEqual(await present(cache), names('fresh', 'freshDep', 'freshTop'))
})

test('a pin keeps its whole closure until it expires; its referrers are not protected', async () => {
  const spec: Record<string, PathSpec> = {
    base: { uploaded: 200 },
    pinnedTop: { uploaded: 200, refs: ['base'] },
    user: { uploaded: 200, refs: ['pinnedTop'] },
    loose: { uploaded: 200 }
  }
  const cache = await fabricate(spec)
  await cache.metadata.retention.addPin({ hashPart: hashPart('pinnedTop'), storePath: storePath('pinnedTop'), keepUntil: null, note: 'release 1.0' }, NOW)
  const report = await collectGarbage(cache, policy({ maxSize: 0, olderThan: DAY }))
  assert.deepEqual([...report.storePaths].sort(), names('loose', 'user'))
  assert.deepEqual(await present(cache), names('base', 'pinnedTop'))
  assert.equal(report.maxSizeReached, false)
  await assertClosed(cache)

  const expiring = await fabricate(spec)
  await expiring.metadata.retention.addPin({ hashPart: hashPart('pinnedTop'), storePath: storePath('pinnedTop'), keepUntil: NOW - 1, note: null }, NOW)
  await expiring.metadata.retention.addPin({ hashPart: hashPart('loose'), storePath: storePath('loose'), keepUntil: NOW + DAY, note: null }, NOW)
  const later = await collectGarbage(expiring, policy({ olderThan: DAY }))
  assert.equal(later.expiredPins, 1)
  assert.deepEqual(await present(expiring), names('loose'))
  assert.deepEqual((await expiring.metadata.retention.listPins()).map(p => p.storePath), [storePath('loose')])
})

test('NAR files no narinfo names go after the grace period, in every run', async () => {
  const cache = await fabricate({ kept: { uploaded: 100 } }, { unnamed: { abandoned: 2 * DAY, uploading: 60_000 } })
  const report = await collectGarbage(cache, policy({ unnamedNarGrace: DAY }))
  assert.deepEqual(report.unnamedNarFiles.map(f => f.fileHash), [fileHash('abandoned')])
  assert.deepEqual(report.storePaths, [])
  assert.equal(report.bytes, 100)
  assert.equal(await holds(cache, fileHash('abandoned')), false)
  assert.equal(await holds(cache, fileHash('uploading')), true)
  assert.deepEqual(await present(cache), names('kept'))
})

/** A small real NAR (serialised by narwhal's NAR writer), uncompressed, unique to `name`. */
async function realNar (name: string): Promise<{ bytes: Buffer, fileHash: string }> {
  const dir = path.join(tempDir('narwhal-gc-nar-'), name)
  mkdirSync(dir)
  writeFileSync(path.join(dir, 'file'), `the contents of ${name}\n`)
  const chunks: Buffer[] = []
  for await (const chunk of dumpPath(dir)) chunks.push(chunk)
  const bytes = Buffer.concat(chunks)
  return { bytes, fileHash: encodeNix32(createHash('sha256').update(bytes).digest()) }
}

const ingest = (bytes: Buffer): IngestOptions => ({ maxBytes: bytes.length, maxNarSize: bytes.length, declaredBytes: 0, reserveBytes: 0 })

// Nix uploads a NAR, then its narinfo. A push abandoned after the NAR and retried days later (a
// retried `nix copy`) uploads the NAR again: its grace period must count from that upload, or a
// collection between the NAR and the narinfo takes the NAR and the narinfo is refused.
test('a NAR no narinfo names, uploaded again after its grace period, is kept for another; one not uploaded again goes', async () => {
  const cache = await openCache(loadConfig(await cacheConfig({ dataDir: tempDir('narwhal-gc-') }), {}))
  const [again, stored, abandoned] = await Promise.all([realNar('again'), realNar('stored'), realNar('abandoned')])
  const uploadedLongAgo = NOW - 3 * DAY
  for (const nar of [again, stored, abandoned]) {
    await storeNar(Readable.from([nar.bytes]), nar.fileHash, cache, ingest(nar.bytes), uploadedLongAgo)
  }
  // The upload the routes make of a NAR the cache holds: holdsNar, then only the hash is checked.
  assert.equal(await holdsNar(again.fileHash, cache, NOW), true)
  await checkReupload(Readable.from([again.bytes]), again.fileHash, again.bytes.length)
  // Stored afresh (the routes do so when the file is gone; two uploads racing end up here too).
  await storeNar(Readable.from([stored.bytes]), stored.fileHash, cache, ingest(stored.bytes), NOW)

  const report = await collectGarbage(cache, policy({ unnamedNarGrace: DAY, now: NOW + 60_000 }))
  assert.deepEqual(report.unnamedNarFiles.map(f => f.fileHash), [abandoned.fileHash], 'only the NAR not uploaded again goes')
  for (const nar of [again, stored]) {
    assert.notEqual((await cache.metadata.narFiles.get(nar.fileHash)), undefined, 'its row stays')
    assert.deepEqual(await readNar(cache.blobs, { fileHash: nar.fileHash, compression: 'none' }), nar.bytes, 'its object stays')
  }
  assert.equal((await cache.metadata.narFiles.get(abandoned.fileHash)), undefined)
  assert.equal(await holds(cache, abandoned.fileHash), false)

  // Uploaded again or not, a NAR still unnamed a grace period after its last upload goes.
  const later = await collectGarbage(cache, policy({ unnamedNarGrace: DAY, now: NOW + DAY + 60_000 }))
  assert.deepEqual(later.unnamedNarFiles.map(f => f.fileHash).sort(), [again.fileHash, stored.fileHash].sort())
  await cache.close()
})

test('holdsNar: false for a NAR the cache lacks or whose object is gone, so the upload stores it again', async () => {
  const cache = await openCache(loadConfig(await cacheConfig({ dataDir: tempDir('narwhal-gc-') }), {}))
  const nar = await realNar('lost')
  assert.equal(await holdsNar(nar.fileHash, cache), false, 'never uploaded')
  assert.equal((await cache.metadata.narFiles.get(nar.fileHash)), undefined, 'and no row made')
  await storeNar(Readable.from([nar.bytes]), nar.fileHash, cache, ingest(nar.bytes), NOW - 3 * DAY)
  await removeNar(cache.blobs, { fileHash: nar.fileHash, compression: 'none' })
  assert.equal(await holdsNar(nar.fileHash, cache, NOW), false, 'the object is gone')
  await storeNar(Readable.from([nar.bytes]), nar.fileHash, cache, ingest(nar.bytes), NOW)
  const report = await collectGarbage(cache, policy({ unnamedNarGrace: DAY, now: NOW + 60_000 }))
  assert.deepEqual(report.unnamedNarFiles, [])
  assert.deepEqual(await readNar(cache.blobs, { fileHash: nar.fileHash, compression: 'none' }), nar.bytes, 'the NAR is stored again')
  await cache.close()
})

test('a dry run reports exactly what the real run then removes, and changes nothing', async () => {
  const spec: Record<string, PathSpec> = {
    a: { uploaded: 50 },
    b: { uploaded: 50, refs: ['a'] },
    c: { uploaded: 50, refs: ['b'], narinfoRead: 40 },
    d: { uploaded: 50, sharesNarOf: 'a' },
    e: { uploaded: 50, narRead: 2 }
  }
  const cache = await fabricate(spec, { unnamed: { stale: 3 * DAY } })
  const options = policy({ maxSize: 150 })
  const dry = await collectGarbage(cache, { ...options, dryRun: true })
  assert.equal(dry.dryRun, true)
  assert.deepEqual(await present(cache), names('a', 'b', 'c', 'd', 'e'), 'the dry run removed nothing')
  assert.ok(await holds(cache, fileHash('stale')))
  assert.equal((await cache.metadata.retention.lastGcRun()), undefined, 'a dry run is not recorded')

  const real = await collectGarbage(cache, options)
  const summary = (r: GcReport): unknown => ({
    storePaths: [...r.storePaths].sort(),
    narFiles: r.narFiles.map(f => f.fileHash).sort(),
    unnamed: r.unnamedNarFiles.map(f => f.fileHash),
    bytes: r.bytes,
    totalBytes: r.totalBytes,
    remainingBytes: r.remainingBytes
  })
  assert.deepEqual(summary(dry), summary(real))
  // a, b, c and d go (d shares a's NAR file, which is freed only when both are gone); e fits.
  assert.deepEqual(await present(cache), names('e'))
  assert.equal(real.bytes, 400)
  assert.equal((await cache.metadata.retention.lastGcRun())?.storePaths, 4)
  await assertClosed(cache)
})

test('a path used, pinned or newly referenced while gc runs is kept, with what it needs', async () => {
  const spec: Record<string, PathSpec> = {
    dep: { uploaded: 100 },
    mid: { uploaded: 100, refs: ['dep'] },
    top: { uploaded: 100, refs: ['mid'] },
    other: { uploaded: 100 },
    pinLater: { uploaded: 100 },
    refLater: { uploaded: 100 }
  }
  const cache = await fabricate(spec)
  let batches = 0
  const report = await collectGarbage(cache, policy({
    olderThan: DAY,
    batchSize: 1,
    shouldStop: async () => {
      if (batches++ === 0) {
        // After the plan was made: top is read, pinLater pinned, and a new path referencing
        // refLater is uploaded (a removal of refLater would take it along).
        await cache.metadata.retention.touch([hashPart('top')], [], NOW + 1000)
        await cache.metadata.retention.addPin({ hashPart: hashPart('pinLater'), storePath: storePath('pinLater'), keepUntil: null, note: null }, NOW)
        await insertNarinfo(cache.metadata, {
          hashPart: hashPart('newcomer'),
          storePath: storePath('newcomer'),
          narFileId: (await cache.metadata.narFiles.get(fileHash('other')))?.id ?? -1,
          narHash: fileHash('other'),
          narSize: 100,
          deriver: null,
          ca: null,
          sigs: [],
          narinfo: '',
          references: [{ hashPart: hashPart('refLater'), baseName: `${hashPart('refLater')}-refLater` }]
        }, NOW + 1000)
      }
      return false
    }
  }))
  assert.deepEqual(report.storePaths, [storePath('other')])
  assert.equal(report.kept, 5)
  assert.deepEqual(await present(cache), names('dep', 'mid', 'newcomer', 'pinLater', 'refLater', 'top'))
  assert.ok(await holds(cache, fileHash('other')), 'a NAR file the newcomer names stays')
  await assertClosed(cache)
})

test('effective last use: a reference inherits its referrers\' latest use; pins and cycles are kept', () => {
  const paths = [
    { id: 1, hashPart: 'a', upstream: null, narFileId: 1, lastUse: 10, pinned: 0 },
    { id: 2, hashPart: 'b', upstream: null, narFileId: 2, lastUse: 50, pinned: 0 },
    { id: 3, hashPart: 'c', upstream: null, narFileId: 3, lastUse: 20, pinned: 0 },
    { id: 4, hashPart: 'd', upstream: null, narFileId: 4, lastUse: 5, pinned: 1 },
    { id: 5, hashPart: 'e', upstream: null, narFileId: 5, lastUse: 1, pinned: 0 },
    { id: 6, hashPart: 'f', upstream: null, narFileId: 6, lastUse: 1, pinned: 0 },
    { id: 7, hashPart: 'g', upstream: null, narFileId: 7, lastUse: 1, pinned: 0 }
  ]
  // b -> a, c -> a, d -> e (pinned d), f <-> g (a cycle Nix never makes)
  const edges = [{ referrer: 2, reference: 1 }, { referrer: 3, reference: 1 }, { referrer: 4, reference: 5 },
    { referrer: 6, reference: 7 }, { referrer: 7, reference: 6 }]
  const { effective } = effectiveLastUse({ paths, edges, narFiles: [] })
  assert.deepEqual(effective, [50, 50, 20, Infinity, Infinity, Infinity, Infinity])
})

test('the schedule collects in a worker thread every interval, logs each run, and stops cleanly', async () => {
  const cache = await fabricate({ stale: { uploaded: 10 }, fresh: { uploaded: 0 } }, { unnamed: { abandoned: 2 * DAY } })
  const runs: Array<Record<string, unknown>> = []
  const failures: unknown[] = []
  const log = { info: (fields: object) => { runs.push(fields as Record<string, unknown>) }, error: (fields: object) => { failures.push(fields) } }
  const settings = { maxSize: null, olderThan: DAY, interval: 50, unnamedNarGrace: DAY, keepRecent: 0 }
  // Where the cache lives (its database and storage too), as serve passes its config.
  const location = loadConfig(await cacheConfig({ dataDir: cache.layout.dataDir }), {})
  const stop = startGcSchedule(location, settings, log)
  assert.ok(await eventually(() => runs.length >= 2, 30_000), 'two scheduled runs')
  await stop()
  const after = runs.length
  assert.deepEqual(failures, [])
  assert.deepEqual({ storePaths: runs[0]?.storePaths, narFiles: runs[0]?.narFiles, unnamedNarFiles: runs[0]?.unnamedNarFiles, bytes: runs[0]?.bytes },
    { storePaths: 1, narFiles: 1, unnamedNarFiles: 1, bytes: 200 })
  assert.equal(runs[1]?.storePaths, 0, 'the next run finds nothing more')
  assert.deepEqual(await present(cache), names('fresh'))
  await new Promise(resolve => setTimeout(resolve, 200))
  assert.equal(runs.length, after, 'no run after stop')

  const off = startGcSchedule(location, { ...settings, interval: null }, log)
  await off()
  assert.equal(runs.length, after)
})
