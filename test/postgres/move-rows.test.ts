/**
 * cache/move-cache.ts through the stores' own interfaces: every kind of row of a SQLite cache
 * (narinfos with references and provenance, a path pulled from an upstream, tokens, pins, logs,
 * the audit log, gc history, read times) arrives in a real PostgreSQL as it was; a narinfo whose
 * NAR is not in place waits, with its referrers, for a later run; runs after the first write
 * nothing twice; a merge keeps what the target holds.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import path from 'node:path'
import { beginMove, moveRows } from '../../src/cache/move-cache.js'
import { parseDatabaseUrl, type PostgresLocation } from '../../src/db/database-url.js'
import type { MetadataStore, ProvenanceEntry } from '../../src/db/metadata-store.js'
import { PgMetadataStore } from '../../src/db/postgres/store.js'
import { openSqliteMetadataStore } from '../../src/db/sqlite/store.js'
import { liveNarFile, narinfoRecord, testPath, type TestPath } from '../helpers/metadata-store-contract.js'
import { tempDir } from '../helpers/nix.js'
import { createDatabase, postgresEngine } from '../helpers/postgres.js'

async function openTarget (t: { after: (fn: () => Promise<void>) => void }): Promise<PgMetadataStore> {
  const db = await createDatabase(postgresEngine())
  t.after(db.drop)
  const store = await PgMetadataStore.open(parseDatabaseUrl(db.url) as PostgresLocation, { migrate: true, maxConnections: 4 })
  t.after(async () => { await store.close() })
  return store
}

async function put (store: MetadataStore, p: TestPath, refs: TestPath[], provenance: ProvenanceEntry, upstreamReferences = false): Promise<void> {
  const file = await liveNarFile(store, provenance.acceptedAt)
  const outcome = await store.narinfos.insert(narinfoRecord(p, file, refs), provenance, { upstreamReferences, now: provenance.acceptedAt })
  assert.deepEqual(outcome, { kind: 'created' })
}

/** What a server reads of a path, the same in both stores. */
async function pathView (store: MetadataStore, p: TestPath): Promise<unknown> {
  const stored = await store.narinfos.get(p.hashPart)
  return {
    stored: stored === undefined ? undefined : { ...stored, id: 0, narFileId: 0 },
    provenance: await store.provenance.ofPath(p.hashPart),
    summary: await store.browse.summary(p.hashPart)
  }
}

test('every kind of row moves as it was; a narinfo whose NAR is not in place waits with its referrers; later runs write nothing twice', async (t) => {
  const source = openSqliteMetadataStore(path.join(tempDir('narwhal-move-rows-'), 'narwhal.sqlite'))
  t.after(async () => { await source.close() })
  const target = await openTarget(t)

  const ci = await source.tokens.insert({ name: 'ci', scope: 'push', tokenHash: 'h-ci', expiresAt: null }, 100)
  const gone = await source.tokens.insert({ name: 'old', scope: 'read', tokenHash: 'h-old', expiresAt: 9_000_000 }, 100)
  await source.tokens.revoke(gone, 200)
  const pushed: ProvenanceEntry = { acceptedAt: 1000, tokenId: ci, tokenName: 'ci', keyNames: ['k1'], clientAddress: '10.0.0.1', upstream: null }
  const a = testPath('a')
  const b = testPath('b')
  const pulled = testPath('pulled')
  const onlyUpstream = testPath('upstream-only')
  await source.upstreamRecords.insert({
    hashPart: onlyUpstream.hashPart,
    storePath: onlyUpstream.storePath,
    upstream: 'https://cache.example',
    narUrl: 'nar/x.nar.xz',
    fileHash: 'x',
    fileSize: 10,
    compression: 'xz',
    narHash: 'sha256:x',
    narSize: 20,
    references: [],
    narinfo: 'StorePath: …\n',
    createdAt: 500
  })
  await put(source, a, [], pushed)
  await put(source, b, [a, b], { ...pushed, acceptedAt: 2000 })
  await put(source, pulled, [onlyUpstream], { ...pushed, acceptedAt: 3000, tokenId: null, tokenName: null, upstream: 'https://cache.example' }, true)
  await source.retention.touch([a.hashPart], [], 50_000)
  await source.retention.addPin({ hashPart: b.hashPart, storePath: b.storePath, keepUntil: null, note: 'release' }, 4000)
  await source.aux.put('log', `${b.baseName}.drv`, { contentType: 'text/plain; charset=utf-8', contentEncoding: 'zstd', body: Buffer.from([1, 2, 3]) }, 4100)
  await source.retention.recordGcRun({ startedAt: 5000, finishedAt: 5100, trigger: 'cli', storePaths: 2, narFiles: 2, bytes: 300, remainingBytes: 900 })
  await source.audit.append([1, 2, 3].map(i => ({
    at: 6000 + i,
    tokenId: ci,
    tokenName: 'ci',
    clientAddress: '10.0.0.1',
    method: 'PUT',
    subject: `s${i}`,
    hashPart: null,
    fileHash: null,
    outcome: 'created',
    status: 200,
    code: null,
    reason: null
  })), 1000)

  const { move, resumed } = await beginMove(target, 'sqlite:/test/source', { merge: false, now: 7000 })
  assert.equal(resumed, false)
  // a's NAR is not in place yet: a waits, and b (which references it) with it; the pulled path does not.
  const first = await moveRows(source, target, move, { batch: 2, narNotPlaced: async (storePath) => storePath === a.storePath ? 'not in the bucket' : undefined })
  assert.deepEqual(first.leftOut.map(l => l.storePath).sort(), [a.storePath, b.storePath].sort())
  assert.match(first.leftOut.find(l => l.storePath === b.storePath)?.reason ?? '', new RegExp(`references ${a.baseName} are not in the target`))
  assert.deepEqual([first.narinfos, first.tokens, first.upstreamRecords, first.pins, first.auxFiles, first.auditEntries, first.gcRuns],
    [{ created: 1, present: 0 }, { created: 2, present: 0 }, { created: 1, present: 0 }, { created: 1, present: 0 }, { created: 1, present: 0 },
      { created: 3, present: 0 }, { created: 1, present: 0 }])
  assert.equal(await target.narinfos.has(a.hashPart), false)

  const again = await beginMove(target, 'sqlite:/test/source', { merge: false, now: 8000 })
  assert.equal(again.resumed, true)
  const second = await moveRows(source, target, again.move, { batch: 2 })
  assert.deepEqual([second.leftOut, second.conflicts], [[], []])
  assert.deepEqual([second.narinfos, second.tokens, second.auditEntries, second.gcRuns],
    // The audit log is read from where the first run stopped: nothing left to read.
    [{ created: 2, present: 1 }, { created: 0, present: 2 }, { created: 0, present: 0 }, { created: 0, present: 1 }])

  const third = await moveRows(source, target, (await beginMove(target, 'sqlite:/test/source', { merge: false, now: 9000 })).move)
  for (const counts of [third.narinfos, third.tokens, third.upstreamRecords, third.pins, third.auxFiles, third.auditEntries, third.gcRuns]) {
    assert.equal(counts.created, 0)
  }

  for (const p of [a, b, pulled]) assert.deepEqual(await pathView(target, p), await pathView(source, p), p.storePath)
  assert.deepEqual(await target.tokens.list(), await source.tokens.list())
  assert.deepEqual(await target.upstreamRecords.get(onlyUpstream.hashPart), await source.upstreamRecords.get(onlyUpstream.hashPart))
  assert.deepEqual(await target.retention.listPins(), await source.retention.listPins())
  assert.deepEqual(await target.aux.get('log', `${b.baseName}.drv`), await source.aux.get('log', `${b.baseName}.drv`))
  assert.deepEqual(await target.retention.lastGcRun(), await source.retention.lastGcRun())
  const strip = (rows: Array<{ id: number }>): unknown[] => rows.map(({ id: _id, ...rest }) => rest)
  assert.deepEqual(strip(await target.audit.query({})), strip(await source.audit.query({})))
  // Read times keep gc's order: the snapshot gc plans with is the same, ids aside.
  const byHash = async (store: MetadataStore): Promise<unknown[]> => (await store.retention.snapshot(60_000)).paths
    .map(({ id: _id, narFileId: _f, ...rest }) => rest).sort((x, y) => x.hashPart.localeCompare(y.hashPart))
  assert.deepEqual(await byHash(target), await byHash(source))
})

test('--merge into a database with a path of its own keeps that path as it is and says so', async (t) => {
  const source = openSqliteMetadataStore(path.join(tempDir('narwhal-move-rows-'), 'narwhal.sqlite'))
  t.after(async () => { await source.close() })
  const target = await openTarget(t)
  const shared = testPath('shared')
  const top = testPath('top')
  const provenance: ProvenanceEntry = { acceptedAt: 1000, tokenId: null, tokenName: null, keyNames: ['k1'], clientAddress: null, upstream: null }
  await put(target, shared, [], provenance) // its own build of the same store path: another NAR hash
  await put(source, shared, [], provenance)
  await put(source, top, [shared], provenance)

  await assert.rejects(beginMove(target, 'sqlite:/test/other', { merge: false, now: 1 }), /already holds another cache: 1 narinfos, 1 NAR files/)
  const { move } = await beginMove(target, 'sqlite:/test/other', { merge: true, now: 1 })
  const before = await target.narinfos.get(shared.hashPart)
  const result = await moveRows(source, target, move)
  assert.deepEqual(result.conflicts.map(c => c.storePath), [shared.storePath])
  assert.deepEqual(await target.narinfos.get(shared.hashPart), before, 'the target\'s own narinfo is untouched')
  assert.equal(await target.narinfos.has(top.hashPart), true, 'a referrer of it is moved: the store path it references is there')
})

test('in one batch, a narinfo whose NAR file an upload is committing in the target waits with its referrer; a path before it and its other referrers move; the next run moves the rest', async (t) => {
  const source = openSqliteMetadataStore(path.join(tempDir('narwhal-move-rows-'), 'narwhal.sqlite'))
  t.after(async () => { await source.close() })
  const target = await openTarget(t)
  const provenance: ProvenanceEntry = { acceptedAt: 1000, tokenId: null, tokenName: null, keyNames: ['k1'], clientAddress: null, upstream: null }
  const base = testPath('base')
  const busy = testPath('busy')
  const onBusy = testPath('on-busy')
  const onBase = testPath('on-base')
  await put(source, base, [], provenance)
  const busyFile = await liveNarFile(source, 1000)
  assert.deepEqual(await source.narinfos.insert(narinfoRecord(busy, busyFile, [base]), provenance, { upstreamReferences: false, now: 1000 }), { kind: 'created' })
  await put(source, onBusy, [busy, base], provenance)
  await put(source, onBase, [base], provenance)
  const { move } = await beginMove(target, 'sqlite:/test/busy', { merge: false, now: 1 })
  // An upload at a replica has claimed the same NAR file in the target and not committed it yet.
  const { fileHash, fileSize, compression, narHash, narSize } = busyFile
  const claimed = await target.narFiles.claim({ fileHash, fileSize, compression, narHash, narSize }, 1000)
  assert.equal(claimed.kind, 'pending')
  if (claimed.kind !== 'pending') return

  const first = await moveRows(source, target, move, { batch: 10 })
  assert.deepEqual(first.leftOut.map(l => l.storePath).sort(), [busy.storePath, onBusy.storePath].sort())
  assert.match(first.leftOut.find(l => l.storePath === busy.storePath)?.reason ?? '', /being uploaded or collected in the target/)
  assert.match(first.leftOut.find(l => l.storePath === onBusy.storePath)?.reason ?? '', new RegExp(`references ${busy.baseName} are not in the target`))
  assert.deepEqual(await Promise.all([base, busy, onBusy, onBase].map(async p => await target.narinfos.has(p.hashPart))), [true, false, false, true])
  assert.deepEqual(await pathView(target, onBase), await pathView(source, onBase))

  assert.equal(await target.narFiles.markLive(claimed.row.id), true)
  const second = await moveRows(source, target, move, { batch: 10 })
  assert.deepEqual([second.leftOut, second.narinfos], [[], { created: 2, present: 2 }])
  for (const p of [busy, onBusy]) assert.deepEqual(await pathView(target, p), await pathView(source, p))
})

test('a cache with many rows of every kind moves whole over many batches: every table counted, and a sample of each compared row by row', { timeout: 5 * 60_000 }, async (t) => {
  const source = openSqliteMetadataStore(path.join(tempDir('narwhal-move-rows-'), 'narwhal.sqlite'))
  t.after(async () => { await source.close() })
  const target = await openTarget(t)
  const N = { narinfos: 240, upstreamRecords: 700, pins: 130, auxFiles: 110, auditEntries: 2600, gcRuns: 40 }

  const ci = await source.tokens.insert({ name: 'ci', scope: 'push', tokenHash: 'h-ci', expiresAt: null }, 100)
  const paths: TestPath[] = []
  for (let i = 0; i < N.narinfos; i++) {
    const p = testPath(`pkg-${i}`)
    // Each references up to three before it; every third was pushed again with a second signature (two provenance rows).
    const refs = paths.slice(-3)
    const file = await liveNarFile(source, 1000 + i)
    const pushed: ProvenanceEntry = { acceptedAt: 1000 + i, tokenId: ci, tokenName: 'ci', keyNames: ['k1'], clientAddress: '10.0.0.1', upstream: null }
    assert.deepEqual(await source.narinfos.insert(narinfoRecord(p, file, refs), pushed, { upstreamReferences: false, now: 1000 + i }), { kind: 'created' })
    if (i % 3 === 0) {
      const stored = await source.narinfos.get(p.hashPart)
      assert.ok(stored !== undefined)
      const merged = await source.narinfos.mergeSignatures(stored.id, stored.sigs, [...stored.sigs, 'k2:BBBB'], `${stored.narinfo}Sig: k2:BBBB\n`,
        { ...pushed, acceptedAt: 5000 + i, keyNames: ['k2'] })
      assert.equal(merged.kind, 'merged')
    }
    paths.push(p)
  }
  const pulled: TestPath[] = []
  for (let i = 0; i < N.upstreamRecords; i++) {
    const p = testPath(`pulled-${i}`)
    await source.upstreamRecords.insert({
      hashPart: p.hashPart,
      storePath: p.storePath,
      upstream: `https://cache${i % 3}.example`,
      narUrl: `nar/f${i}.nar.xz`,
      fileHash: `f${i}`,
      fileSize: 10 + i,
      compression: 'xz',
      narHash: `sha256:n${i}`,
      narSize: 20 + i,
      references: i % 2 === 0 ? [] : [pulled[i - 1]?.baseName ?? ''],
      narinfo: `StorePath: ${p.storePath}\n`,
      createdAt: 500 + i
    })
    pulled.push(p)
  }
  for (let i = 0; i < N.pins; i++) {
    const p = paths[i] as TestPath
    await source.retention.addPin({ hashPart: p.hashPart, storePath: p.storePath, keepUntil: i % 2 === 0 ? null : 90_000 + i, note: i % 5 === 0 ? null : `note ${i}` }, 4000 + i)
  }
  for (let i = 0; i < N.auxFiles; i++) {
    const body = Buffer.alloc(100 + i * 13, i)
    await source.aux.put(i % 4 === 0 ? 'ls' : 'log', `${(paths[i] as TestPath).baseName}.drv`,
      { contentType: 'text/plain; charset=utf-8', contentEncoding: i % 2 === 0 ? null : 'zstd', body }, 4100 + i)
  }
  for (let i = 0; i < N.gcRuns; i++) {
    await source.retention.recordGcRun({ startedAt: 5000 + i, finishedAt: 5100 + i, trigger: i % 2 === 0 ? 'cli' : 'schedule', storePaths: i, narFiles: i, bytes: 300 * i, remainingBytes: 900 })
  }
  await source.audit.append(Array.from({ length: N.auditEntries }, (_, i) => ({
    at: 6000 + i,
    tokenId: i % 7 === 0 ? null : ci,
    tokenName: i % 7 === 0 ? null : 'ci',
    clientAddress: `10.0.${i % 250}.1`,
    method: i % 2 === 0 ? 'PUT' : 'DELETE',
    subject: `subject ${i}`,
    hashPart: i % 3 === 0 ? (paths[i % N.narinfos] as TestPath).hashPart : null,
    fileHash: i % 5 === 0 ? `f${i}` : null,
    outcome: i % 11 === 0 ? 'refused' : 'created',
    status: i % 11 === 0 ? 400 : 201,
    code: i % 11 === 0 ? 'NARWHAL_NARINFO_INVALID' : null,
    reason: i % 11 === 0 ? `reason ${i}` : null
  })), N.auditEntries)

  const { move } = await beginMove(target, 'sqlite:/test/many', { merge: false, now: 7000 })
  // 25 rows a batch: the audit log in batches of 125, logs of 2, everything else of 25.
  const moved = await moveRows(source, target, move, { batch: 25 })
  assert.deepEqual([moved.leftOut, moved.conflicts], [[], []])
  assert.deepEqual([moved.narinfos, moved.upstreamRecords, moved.pins, moved.auxFiles, moved.auditEntries, moved.gcRuns].map(c => c.created),
    [N.narinfos, N.upstreamRecords, N.pins, N.auxFiles, N.auditEntries, N.gcRuns])
  const held = await target.load?.contents()
  assert.deepEqual(held, { narinfos: N.narinfos, narFiles: N.narinfos, tokens: 1, pins: N.pins, auxFiles: N.auxFiles, upstreamRecords: N.upstreamRecords, auditEntries: N.auditEntries, gcRuns: N.gcRuns })

  // Every narinfo with its provenance and references; a sample of the rest, row by row; the lists whole.
  for (const p of paths) assert.deepEqual(await pathView(target, p), await pathView(source, p), p.storePath)
  for (const p of pulled.filter((_, i) => i % 37 === 0 || i === pulled.length - 1)) {
    assert.deepEqual(await target.upstreamRecords.get(p.hashPart), await source.upstreamRecords.get(p.hashPart), p.storePath)
  }
  for (const [i, p] of paths.slice(0, N.auxFiles).entries()) {
    if (i % 9 !== 0 && i !== N.auxFiles - 1) continue
    const kind = i % 4 === 0 ? 'ls' : 'log'
    assert.deepEqual(await target.aux.get(kind, `${p.baseName}.drv`), await source.aux.get(kind, `${p.baseName}.drv`))
  }
  assert.deepEqual(await target.retention.listPins(), await source.retention.listPins())
  const strip = (rows: Array<{ id: number }>): unknown[] => rows.map(({ id: _id, ...rest }) => rest)
  // In the same order too: the new ids keep the source's.
  assert.deepEqual(strip(await target.audit.query({})), strip(await source.audit.query({})))
  assert.deepEqual(await target.retention.lastGcRun(), await source.retention.lastGcRun())

  const again = await moveRows(source, target, (await beginMove(target, 'sqlite:/test/many', { merge: false, now: 8000 })).move, { batch: 25 })
  for (const counts of [again.narinfos, again.upstreamRecords, again.pins, again.auxFiles, again.auditEntries, again.gcRuns]) assert.equal(counts.created, 0)
  assert.deepEqual(await target.load?.contents(), held)
})
