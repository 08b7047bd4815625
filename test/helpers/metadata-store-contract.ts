/**
 * What every MetadataStore backend must do (src/db/metadata-store.ts), as one test body run
 * against each: SQLite and PostgreSQL. Behaviour only, through the interface: the NAR file state
 * protocol, the conditional narinfo insert and signature merge, removal with referrers, tokens,
 * aux files, retention, provenance, the audit log, the pages' reads and upstream records.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import type { MetadataStore, NarFileFacts, NarFileRow, NarinfoRecord, ProvenanceEntry } from '../../src/db/metadata-store.js'

const NIX32 = '0123456789abcdfghijklmnpqrsvwxyz'

export function fakeHash (): string {
  return [...randomBytes(32)].map(b => NIX32[b % 32]).join('')
}

export function narFacts (overrides: Partial<NarFileFacts> = {}): NarFileFacts {
  return { fileHash: fakeHash() + fakeHash().slice(0, 20), fileSize: 1000, compression: 'xz', narHash: 'sha256:' + fakeHash(), narSize: 4000, ...overrides }
}

export interface TestPath { hashPart: string, baseName: string, storePath: string }

export function testPath (name = 'pkg'): TestPath {
  const hashPart = fakeHash()
  const baseName = `${hashPart}-${name}`
  return { hashPart, baseName, storePath: `/nix/store/${baseName}` }
}

export function narinfoRecord (path: TestPath, file: NarFileRow, references: TestPath[] = [], sigs = ['k1:AAAA']): NarinfoRecord {
  return {
    hashPart: path.hashPart,
    storePath: path.storePath,
    narFileId: file.id,
    narHash: file.narHash,
    narSize: file.narSize,
    deriver: null,
    ca: null,
    sigs,
    narinfo: `StorePath: ${path.storePath}\nSig: ${sigs.join(' ')}\n`,
    references: references.map(r => ({ hashPart: r.hashPart, baseName: r.baseName }))
  }
}

export const PROVENANCE: ProvenanceEntry = { acceptedAt: 1000, tokenId: 7, tokenName: 'ci', keyNames: ['k1'], clientAddress: '127.0.0.1', upstream: null }

/** A live NAR file, claimed and marked live as an upload does. */
export async function liveNarFile (store: MetadataStore, now = 1000, facts = narFacts()): Promise<NarFileRow> {
  const claimed = await store.narFiles.claim(facts, now)
  assert.equal(claimed.kind, 'pending')
  if (claimed.kind !== 'pending') throw new Error('unreachable')
  assert.equal(await store.narFiles.markLive(claimed.row.id), true)
  const row = await store.narFiles.getById(claimed.row.id)
  assert.ok(row !== undefined)
  return row
}

/** A narinfo stored with a live NAR file of its own. */
export async function storedPath (store: MetadataStore, path: TestPath, references: TestPath[] = [], now = 1000): Promise<NarFileRow> {
  const file = await liveNarFile(store, now)
  const outcome = await store.narinfos.insert(narinfoRecord(path, file, references), PROVENANCE, { upstreamReferences: false, now })
  assert.deepEqual(outcome, { kind: 'created' })
  return file
}

export type OpenStore = () => Promise<MetadataStore>

/** Registers the contract's tests for one backend; `open` gives a fresh, empty, migrated store (closed by the test). */
export function metadataStoreContract (backend: string, open: OpenStore): void {
  const withStore = (name: string, body: (store: MetadataStore) => Promise<void>): void => {
    test(`${backend}: ${name}`, async () => {
      const store = await open()
      try {
        await body(store)
      } finally {
        await store.close()
      }
    })
  }

  withStore('a NAR file goes pending → live; a second claim renews it; only live files are peeked and renewed', async (store) => {
    const facts = narFacts()
    const first = await store.narFiles.claim(facts, 1000)
    assert.equal(first.kind, 'pending')
    if (first.kind !== 'pending') return
    assert.equal(first.row.state, 'pending')
    assert.equal(await store.narFiles.renew(facts.fileHash, 1500), undefined, 'a pending file is not renewed')
    const again = await store.narFiles.claim(facts, 2000)
    assert.deepEqual(again, { kind: 'pending', row: first.row }, 'another upload of the same bytes commits it too')
    await store.narFiles.get(facts.fileHash)
    assert.ok(store.narFiles.peekLive(facts.fileHash) !== first.row, 'a pending file is never peeked as live')

    assert.equal(await store.narFiles.markLive(first.row.id), true)
    assert.equal(await store.narFiles.markLive(first.row.id), true, 'already live is live')
    const live = await store.narFiles.claim(facts, 3000)
    assert.equal(live.kind, 'live')
    assert.equal((await store.narFiles.get(facts.fileHash))?.state, 'live')
    const peeked = store.narFiles.peekLive(facts.fileHash)
    assert.ok(peeked === undefined || peeked?.id === first.row.id, 'peekLive gives the live row or says it does not know')
    assert.equal((await store.narFiles.renew(facts.fileHash, 4000))?.id, first.row.id)
    assert.equal(await store.narFiles.get(fakeHash()), undefined)
    assert.deepEqual(await store.narFiles.totals(), { files: 1, bytes: facts.fileSize })
  })

  withStore('a narinfo is inserted only once, only with a live NAR file and references present', async (store) => {
    const dep = testPath('dep')
    const top = testPath('top')
    const depFile = await storedPath(store, dep)

    const pending = await store.narFiles.claim(narFacts(), 1000)
    assert.equal(pending.kind, 'pending')
    if (pending.kind !== 'pending') return
    assert.deepEqual(await store.narinfos.insert(narinfoRecord(top, pending.row, [dep]), PROVENANCE, { upstreamReferences: false, now: 1000 }),
      { kind: 'nar-file-not-live' })

    const topFile = await liveNarFile(store)
    const stranger = testPath('not-here')
    assert.deepEqual(await store.narinfos.insert(narinfoRecord(top, topFile, [dep, stranger, top]), PROVENANCE, { upstreamReferences: false, now: 1000 }),
      { kind: 'missing-references', baseNames: [stranger.baseName] }, 'only the absent reference is named; itself counts as present')
    const wrongName = { ...dep, baseName: `${dep.hashPart}-other`, storePath: `/nix/store/${dep.hashPart}-other` }
    assert.equal((await store.narinfos.insert(narinfoRecord(top, topFile, [wrongName]), PROVENANCE, { upstreamReferences: false, now: 1000 })).kind,
      'missing-references', 'a reference must be the exact store path held')

    assert.deepEqual(await store.narinfos.insert(narinfoRecord(top, topFile, [top, dep]), PROVENANCE, { upstreamReferences: false, now: 1000 }),
      { kind: 'created' })
    const again = await store.narinfos.insert(narinfoRecord(top, depFile, []), PROVENANCE, { upstreamReferences: false, now: 1000 })
    assert.equal(again.kind, 'exists')
    if (again.kind !== 'exists') return
    assert.equal(again.existing.narFileId, topFile.id, 'the stored one, not the one offered')
    assert.deepEqual(again.existing.references, [top.baseName, dep.baseName].sort())
    assert.deepEqual(again.existing.sigs, ['k1:AAAA'])

    assert.equal((await store.narinfos.body(top.hashPart))?.toString(), narinfoRecord(top, topFile).narinfo)
    assert.equal(await store.narinfos.text(top.hashPart), narinfoRecord(top, topFile).narinfo)
    assert.equal(await store.narinfos.has(top.hashPart), true)
    assert.equal(await store.narinfos.storePathOf(top.hashPart), top.storePath)
    assert.equal(await store.narinfos.count(), 2)
    assert.equal(await store.narinfos.body(stranger.hashPart), undefined)
    assert.deepEqual(await store.narinfos.naming([topFile.id]), [{ hashPart: top.hashPart, storePath: top.storePath }])
    assert.deepEqual(await store.narinfos.missingReferences(), [])
    assert.deepEqual(await store.narinfos.withoutLiveNarFile(), [])
    assert.deepEqual((await store.provenance.ofPath(top.hashPart)).map(p => ({ ...p })),
      [{ ...PROVENANCE, outcome: 'created' }])
  })

  withStore('an upstream record counts as a present reference only when allowed, and only while served', async (store) => {
    const pulled = testPath('pulled')
    const top = testPath('top')
    await store.upstreamRecords.insert({
      hashPart: pulled.hashPart,
      storePath: pulled.storePath,
      upstream: 'https://up.example',
      narUrl: 'nar/x.nar.xz',
      fileHash: 'fh1',
      fileSize: 10,
      compression: 'xz',
      narHash: 'sha256:x',
      narSize: 20,
      references: [],
      narinfo: 'StorePath: x\n',
      createdAt: 5
    })
    await store.upstreamRecords.insert({
      hashPart: pulled.hashPart,
      storePath: pulled.storePath,
      upstream: 'https://other.example',
      narUrl: 'nar/y.nar.xz',
      fileHash: 'fh2',
      fileSize: 10,
      compression: 'xz',
      narHash: 'sha256:y',
      narSize: 20,
      references: [],
      narinfo: 'StorePath: y\n',
      createdAt: 6
    })
    const record = await store.upstreamRecords.get(pulled.hashPart)
    assert.equal(record?.upstream, 'https://up.example', 'the first record stored for a path stays')
    assert.deepEqual(record?.references, [])
    assert.equal(await store.upstreamRecords.holds(pulled.hashPart, pulled.storePath), true)
    assert.deepEqual((await store.upstreamRecords.namingFile('fh1')).map(r => r.hashPart), [pulled.hashPart])

    const file = await liveNarFile(store)
    assert.equal((await store.narinfos.insert(narinfoRecord(top, file, [pulled]), PROVENANCE, { upstreamReferences: false, now: 1 })).kind, 'missing-references')
    assert.equal(await store.upstreamRecords.refuseFile('fh1', 99), 1)
    assert.equal(await store.upstreamRecords.holds(pulled.hashPart, pulled.storePath), false)
    assert.equal((await store.narinfos.insert(narinfoRecord(top, file, [pulled]), PROVENANCE, { upstreamReferences: true, now: 1 })).kind,
      'missing-references', 'a refused record is no reference')
    assert.equal((await store.upstreamRecords.get(pulled.hashPart))?.refusedAt, 99)
  })

  withStore('narinfos committed without waiting for the disk are read at once, and flush waits for them', async (store) => {
    const paths = [testPath('deferred-a'), testPath('deferred-b')]
    for (const p of paths) {
      const file = await liveNarFile(store)
      assert.deepEqual(await store.narinfos.insert(narinfoRecord(p, file), PROVENANCE, { upstreamReferences: false, now: 1000, durableWithNext: true }),
        { kind: 'created' })
      assert.equal((await store.narinfos.get(p.hashPart))?.storePath, p.storePath)
    }
    await store.flush()
    await store.flush()
    assert.equal(await store.narinfos.count(), 2)
  })

  withStore('signatures merge only over the signatures the caller saw', async (store) => {
    const path = testPath()
    await storedPath(store, path)
    const stored = await store.narinfos.get(path.hashPart)
    assert.ok(stored !== undefined)
    assert.equal((await store.narinfos.body(path.hashPart))?.toString().includes('k2:'), false)
    const merged = await store.narinfos.mergeSignatures(stored.id, stored.sigs, ['k1:AAAA', 'k2:BBBB'], 'StorePath: x\nSig: k1:AAAA k2:BBBB\n',
      { ...PROVENANCE, keyNames: ['k2'], acceptedAt: 2000 })
    assert.deepEqual(merged, { kind: 'merged' })
    assert.equal((await store.narinfos.body(path.hashPart))?.toString(), 'StorePath: x\nSig: k1:AAAA k2:BBBB\n', 'a write is read back at once')
    assert.deepEqual((await store.narinfos.get(path.hashPart))?.sigs, ['k1:AAAA', 'k2:BBBB'])
    assert.deepEqual(await store.narinfos.mergeSignatures(stored.id, stored.sigs, ['k1:AAAA', 'k3:CCCC'], 'x', PROVENANCE),
      { kind: 'changed-meanwhile' })
    assert.deepEqual((await store.provenance.ofPath(path.hashPart)).map(p => p.outcome), ['created', 'merged'])
    assert.equal(await store.provenance.createdSince(0), 1)
  })

  withStore('removal takes referrers along, leaves shared NAR files, marks unnamed ones deleting; a dry run changes nothing', async (store) => {
    const dep = testPath('dep')
    const mid = testPath('mid')
    const top = testPath('top')
    const other = testPath('other')
    const depFile = await storedPath(store, dep)
    const midFile = await storedPath(store, mid, [dep])
    const topFile = await storedPath(store, top, [mid])
    // `other` shares dep's NAR file.
    assert.deepEqual(await store.narinfos.insert(narinfoRecord(other, depFile), PROVENANCE, { upstreamReferences: false, now: 1000 }), { kind: 'created' })

    const dry = await store.narinfos.remove({ hashParts: [dep.hashPart] }, { dryRun: true })
    assert.deepEqual(dry.storePaths, [dep, mid, top].map(p => p.storePath).sort((a, b) => a.slice(11) < b.slice(11) ? -1 : 1))
    assert.deepEqual(dry.narFiles.map(f => f.id).sort(), [midFile.id, topFile.id].sort(), 'dep\'s file is still named by other')
    assert.equal(await store.narinfos.count(), 4, 'a dry run removes nothing')
    assert.equal((await store.narFiles.getById(midFile.id))?.state, 'live')

    const kept = await store.narinfos.remove({ hashParts: [dep.hashPart], stillWanted: () => false })
    assert.deepEqual(kept, { storePaths: [], kept: [dep.hashPart], narFiles: [] })
    assert.deepEqual(await store.narinfos.remove({ hashParts: [testPath().hashPart], stillWanted: () => false }),
      { storePaths: [], kept: [], narFiles: [] }, 'a path not here takes nothing along and is not judged')

    const seen: Array<{ hashPart: string, closure: string[] }> = []
    const removed = await store.narinfos.remove({
      hashParts: [dep.hashPart],
      stillWanted: (hashPart, closure) => { seen.push({ hashPart, closure: closure.map(c => c.hashPart).sort() }); return true }
    })
    assert.deepEqual(seen, [{ hashPart: dep.hashPart, closure: [dep, mid, top].map(p => p.hashPart).sort() }])
    assert.equal(removed.storePaths.length, 3)
    assert.deepEqual(removed.narFiles.map(f => [f.id, f.state]).sort(), [[midFile.id, 'deleting'], [topFile.id, 'deleting']].sort())
    assert.equal(await store.narinfos.count(), 1)
    assert.equal(await store.narinfos.body(top.hashPart), undefined, 'removed narinfos are not served')
    assert.deepEqual(await store.narinfos.missingReferences(), [])

    // A deleting file is neither claimed (the uploader waits) nor named.
    assert.deepEqual(await store.narFiles.claim({ fileHash: midFile.fileHash, fileSize: midFile.fileSize, compression: midFile.compression, narHash: midFile.narHash, narSize: midFile.narSize }, 5000),
      { kind: 'deleting' })
    assert.equal(await store.narFiles.markLive(midFile.id), false)
    assert.deepEqual(await store.narinfos.insert(narinfoRecord(mid, midFile), PROVENANCE, { upstreamReferences: false, now: 1 }), { kind: 'nar-file-not-live' })
    assert.equal(await store.narFiles.forget(depFile.id), false, 'a live, named file is not forgotten')
    assert.equal(await store.narFiles.forget(midFile.id), true)
    assert.equal(await store.narFiles.get(midFile.fileHash), undefined)
    const reclaimed = await store.narFiles.claim({ fileHash: midFile.fileHash, fileSize: 1, compression: 'xz', narHash: 'n', narSize: 1 }, 6000)
    assert.equal(reclaimed.kind, 'pending', 'once forgotten, the same bytes may be uploaded afresh')
  })

  withStore('fsck removal of damaged NAR files takes the narinfos naming them and their referrers', async (store) => {
    const dep = testPath('dep')
    const top = testPath('top')
    const depFile = await storedPath(store, dep)
    await storedPath(store, top, [dep])
    const removed = await store.narinfos.remove({ hashParts: [], narFileIds: [depFile.id] })
    assert.equal(removed.storePaths.length, 2)
    assert.ok(removed.narFiles.some(f => f.id === depFile.id && f.state === 'deleting'))
    assert.equal(await store.narinfos.count(), 0)
  })

  withStore('gc\'s first step marks unnamed files past the grace and crashed uploads deleting, and finds earlier ones', async (store) => {
    const named = testPath()
    await storedPath(store, named, [], 100)
    const oldUnnamed = await liveNarFile(store, 100)
    const youngUnnamed = await liveNarFile(store, 5000)
    const crashed = await store.narFiles.claim(narFacts(), 100)
    const uploading = await store.narFiles.claim(narFacts(), 5000)
    assert.ok(crashed.kind === 'pending' && uploading.kind === 'pending')

    const dry = await store.narFiles.markUnnamedDeleting(1000, 1000, { dryRun: true })
    assert.deepEqual(dry.map(r => r.id).sort(), [oldUnnamed.id, crashed.row.id].sort())
    assert.equal((await store.narFiles.getById(oldUnnamed.id))?.state, 'live', 'a dry run changes nothing')

    const marked = await store.narFiles.markUnnamedDeleting(1000, 1000)
    assert.deepEqual(marked.map(r => [r.id, r.state]).sort(), [[oldUnnamed.id, 'deleting'], [crashed.row.id, 'deleting']].sort())
    assert.equal((await store.narFiles.getById(youngUnnamed.id))?.state, 'live')
    assert.equal((await store.narFiles.getById(uploading.row.id))?.state, 'pending')
    // Interrupted before forgetting: the next run finds them again.
    assert.deepEqual((await store.narFiles.markUnnamedDeleting(1000, 1000)).map(r => r.id).sort(), [oldUnnamed.id, crashed.row.id].sort())
    assert.equal(await store.retention.totalNarBytes(), 2 * 1000, 'only live files count (the named one and the young one)')
  })

  withStore('tokens: created, found by hash, listed, revoked once', async (store) => {
    const id = await store.tokens.insert({ name: 'ci', scope: 'push', tokenHash: 'h1', expiresAt: null }, 10)
    const second = await store.tokens.insert({ name: 'reader', scope: 'read', tokenHash: 'h2', expiresAt: 99 }, 11)
    assert.ok(second > id)
    assert.deepEqual(await store.tokens.byHash('h1'), { id, name: 'ci', scope: 'push', createdAt: 10, expiresAt: null, revokedAt: null })
    assert.equal(await store.tokens.revoke(id, 20), true)
    assert.equal(await store.tokens.revoke(id, 30), false)
    assert.equal((await store.tokens.byHash('h1'))?.revokedAt, 20, 'revoked, read back at once')
    assert.deepEqual((await store.tokens.list()).map(t => t.name), ['ci', 'reader'])
    assert.equal(await store.tokens.byHash('nope'), undefined)
  })

  withStore('aux files: stored as sent, replaced, paged without bodies', async (store) => {
    await store.aux.put('log', 'a.drv', { contentType: 'text/plain', contentEncoding: null, body: Buffer.from('one') }, 1)
    await store.aux.put('log', 'a.drv', { contentType: 'text/plain', contentEncoding: 'zstd', body: Buffer.from('two!') }, 2)
    await store.aux.put('ls', 'x', { contentType: 'application/json', contentEncoding: null, body: Buffer.from('{}') }, 3)
    const got = await store.aux.get('log', 'a.drv')
    assert.equal(got?.body.toString(), 'two!')
    assert.equal(got?.contentEncoding, 'zstd')
    assert.equal(await store.aux.get('log', 'b.drv'), undefined)
    const page = await store.aux.page(0, 10)
    assert.deepEqual(page.map(e => [e.kind, e.name, e.size]), [['log', 'a.drv', 4], ['ls', 'x', 2]])
    assert.deepEqual(await store.aux.page(page[0]!.id, 10), [page[1]])
  })

  withStore('retention: a path\'s last-use times are read per row and can be set back', async (store) => {
    const dep = testPath('dep')
    const top = testPath('top')
    const depFile = await storedPath(store, dep, [], 1000)
    const topFile = await storedPath(store, top, [dep], 1000)
    assert.deepEqual(await store.retention.lastUse(top.hashPart), { narinfo: 1000, narFile: 1000 }, 'both start at the upload')
    assert.equal(await store.retention.lastUse(testPath('absent').hashPart), undefined)
    await store.retention.touch([top.hashPart], [depFile.fileHash], 200_000)
    assert.deepEqual(await store.retention.lastUse(top.hashPart), { narinfo: 200_000, narFile: 1000 })
    assert.deepEqual(await store.retention.lastUse(dep.hashPart), { narinfo: 1000, narFile: 200_000 })
    await store.retention.setLastUse([top.hashPart], [depFile.fileHash, topFile.fileHash], 500)
    assert.deepEqual(await store.retention.lastUse(top.hashPart), { narinfo: 500, narFile: 500 }, 'set back, unlike touch')
    assert.deepEqual(await store.retention.lastUse(dep.hashPart), { narinfo: 1000, narFile: 500 })
    await store.retention.touch([top.hashPart], [], 150_000)
    assert.equal((await store.retention.lastUse(top.hashPart))?.narinfo, 150_000, 'and touch moves it forward again')
  })

  withStore('retention: reads are recorded (never backwards), the snapshot agrees, pins and gc runs are kept', async (store) => {
    const dep = testPath('dep')
    const top = testPath('top')
    const depFile = await storedPath(store, dep, [], 1000)
    await storedPath(store, top, [dep], 1000)
    await store.retention.touch([top.hashPart], [depFile.fileHash], 200_000)
    await store.retention.touch([top.hashPart], [], 150_000)
    await store.retention.addPin({ hashPart: dep.hashPart, storePath: dep.storePath, keepUntil: null, note: 'keep' }, 5)
    await store.retention.addPin({ hashPart: top.hashPart, storePath: top.storePath, keepUntil: 100, note: null }, 5)
    const snapshot = await store.retention.snapshot(50)
    const byHash = new Map(snapshot.paths.map(p => [p.hashPart, p]))
    assert.equal(byHash.get(top.hashPart)?.lastUse, 200_000)
    assert.equal(byHash.get(dep.hashPart)?.lastUse, 200_000, 'a NAR download is use of its path')
    assert.equal(byHash.get(dep.hashPart)?.pinned, 1)
    assert.equal(byHash.get(top.hashPart)?.pinned, 1, 'pinned until 100, judged at 50')
    assert.deepEqual(snapshot.edges, [{ referrer: byHash.get(top.hashPart)!.id, reference: byHash.get(dep.hashPart)!.id }])
    assert.equal(snapshot.narFiles.length, 2)
    assert.equal(byHash.get(top.hashPart)?.upstream, null, 'pushed, not pulled')

    const pulled = testPath('pulled')
    const pulledFile = await liveNarFile(store, 1000)
    await store.upstreamRecords.insert({
      hashPart: pulled.hashPart,
      storePath: pulled.storePath,
      upstream: 'https://up.example',
      narUrl: 'nar/p.nar.xz',
      fileHash: pulledFile.fileHash,
      fileSize: pulledFile.fileSize,
      compression: 'xz',
      narHash: pulledFile.narHash,
      narSize: pulledFile.narSize,
      references: [],
      narinfo: 'x',
      createdAt: 1
    })
    assert.deepEqual(await store.narinfos.insert(narinfoRecord(pulled, pulledFile), PROVENANCE, { upstreamReferences: false, now: 1000 }), { kind: 'created' })
    assert.equal((await store.retention.snapshot(50)).paths.find(p => p.hashPart === pulled.hashPart)?.upstream, 'https://up.example',
      'a pulled path names the upstream that can give it again')
    assert.equal((await store.retention.snapshot(200)).paths.find(p => p.hashPart === top.hashPart)?.pinned, 0)
    assert.deepEqual([...(await store.retention.storePathsOf([byHash.get(top.hashPart)!.id, 999_999])).values()], [top.storePath])
    assert.deepEqual((await store.browse.pin(dep.hashPart)), { keepUntil: null, note: 'keep' })
    assert.equal(await store.retention.deleteExpiredPins(100), 1)
    assert.deepEqual((await store.retention.listPins()).map(p => p.hashPart), [dep.hashPart])
    assert.equal(await store.retention.removePin(dep.hashPart), true)
    assert.equal(await store.retention.removePin(dep.hashPart), false)

    assert.equal(await store.retention.lastGcRun(), undefined)
    const run = { startedAt: 1, finishedAt: 2, trigger: 'cli' as const, storePaths: 3, narFiles: 4, bytes: 5, remainingBytes: 6 }
    await store.retention.recordGcRun(run)
    await store.retention.recordGcRun({ ...run, startedAt: 10, storePaths: 1 })
    assert.deepEqual(await store.retention.lastGcRun(), { ...run, startedAt: 10, storePaths: 1 })
    assert.deepEqual(await store.retention.gcTotals(), { runs: 2, storePaths: 4, narFiles: 8, bytes: 10 })
  })

  withStore('the audit log appends, trims to its newest entries and filters', async (store) => {
    const entry = { at: 1, tokenId: null, tokenName: null, clientAddress: '::1', method: 'PUT', subject: 's', hashPart: null, fileHash: null, outcome: 'created', status: 200, code: null, reason: null }
    await store.audit.append([{ ...entry, at: 1 }, { ...entry, at: 2, hashPart: 'h', tokenId: 3 }, { ...entry, at: 3, fileHash: 'f', outcome: 'refused', status: 400, code: 'NARWHAL_NAR_INVALID', reason: 'bad' }], 10)
    assert.deepEqual((await store.audit.query({})).map(r => r.at), [1, 2, 3])
    assert.deepEqual((await store.audit.query({ hashPart: 'h', fileHash: 'f' })).map(r => r.at), [2, 3])
    assert.deepEqual((await store.audit.query({ tokenId: 3 })).map(r => r.at), [2])
    assert.deepEqual((await store.audit.query({ since: 2, limit: 1 })).map(r => r.at), [3])
    assert.equal((await store.audit.query({ since: 3 }))[0]?.code, 'NARWHAL_NAR_INVALID')
    await store.audit.append([{ ...entry, at: 4 }], 2)
    assert.deepEqual((await store.audit.query({})).map(r => r.at), [3, 4])
  })

  withStore('the pages\' reads: totals, search by hash prefix and name, a path\'s summary, referrers and references', async (store) => {
    const dep = testPath('libfoo-1.0')
    const top = testPath('Hello-2.12')
    const depFile = await storedPath(store, dep)
    await storedPath(store, top, [dep])
    assert.deepEqual(await store.browse.totals(), { paths: 2, narFiles: 2, narBytes: 2000 })
    assert.deepEqual((await store.browse.byHashPrefix(top.hashPart.slice(0, 6), 10)).map(h => h.hashPart), [top.hashPart])
    assert.deepEqual((await store.browse.byName('hello', 10)).map(h => h.storePath), [top.storePath], 'case-insensitive')
    assert.deepEqual(await store.browse.byName('%', 10), [], 'wildcards are literal')
    const summary = await store.browse.summary(dep.hashPart)
    assert.equal(summary?.fileHash, depFile.fileHash)
    assert.deepEqual(await store.browse.referrers(dep.hashPart, 10), [{ hashPart: top.hashPart, storePath: top.storePath }])
    assert.deepEqual(await store.browse.references(top.hashPart), [{ baseName: dep.baseName, present: true }])
    assert.equal(await store.browse.narFilesFetchedSince(0), 0)
    await store.retention.touch([], [depFile.fileHash], 500_000)
    assert.equal(await store.browse.narFilesFetchedSince(400_000), 1)
  })
}
