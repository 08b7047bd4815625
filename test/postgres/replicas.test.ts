/**
 * Several replicas on one PostgreSQL, each a PgMetadataStore of its own (as each `narwhal serve`
 * process has): what one writes, the others serve within a second; a revoked token is refused by
 * all at once; and uploads racing gc and removals never leave a narinfo naming a NAR file that is
 * not live, nor one whose references are gone (the row locks of nar-files.ts and narinfos.ts).
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { parseDatabaseUrl, type PostgresLocation } from '../../src/db/database-url.js'
import { PgMetadataStore } from '../../src/db/postgres/store.js'
import type { InsertNarinfoOutcome } from '../../src/db/metadata-store.js'
import { liveNarFile, narinfoRecord, PROVENANCE, storedPath, testPath } from '../helpers/metadata-store-contract.js'
import { createDatabase, postgresEngine } from '../helpers/postgres.js'

async function replicas (t: { after: (fn: () => Promise<void>) => void }, count: number): Promise<PgMetadataStore[]> {
  const db = await createDatabase(postgresEngine())
  t.after(db.drop)
  const location = parseDatabaseUrl(db.url) as PostgresLocation
  const stores: PgMetadataStore[] = []
  for (let i = 0; i < count; i++) stores.push(await PgMetadataStore.open(location, { migrate: i === 0, maxConnections: 8 }))
  t.after(async () => { await Promise.all(stores.map(async s => { await s.close() })) })
  return stores
}

async function within<T> (ms: number, what: string, probe: () => Promise<T | undefined>): Promise<{ value: T, ms: number }> {
  const started = Date.now()
  for (;;) {
    const value = await probe()
    if (value !== undefined) return { value, ms: Date.now() - started }
    assert.ok(Date.now() - started < ms, `${what} within ${ms} ms`)
    await new Promise(resolve => setTimeout(resolve, 5))
  }
}

test('a narinfo written at one replica is served at the other within a second; a revoked token is refused at once', async (t) => {
  const [a, b] = await replicas(t, 2) as [PgMetadataStore, PgMetadataStore]
  const path = testPath()
  assert.equal(await b.narinfos.body(path.hashPart), undefined)
  assert.equal(b.narinfos.peekBody(path.hashPart), null, 'the miss is remembered while nothing changes')
  const generation = b.servedGeneration()

  await storedPath(a, path)
  const seen = await within(1000, 'the other replica serves it', async () => await b.narinfos.body(path.hashPart))
  assert.match(seen.value.toString(), /StorePath: /)
  assert.notEqual(b.servedGeneration(), generation, 'memories of served bytes are told to go')

  // Removed at one: gone from the other's memory too.
  await a.narinfos.remove({ hashParts: [path.hashPart] })
  await within(1000, 'the removal is seen at the other replica', async () => (await b.narinfos.body(path.hashPart)) === undefined ? true : undefined)

  const id = await a.tokens.insert({ name: 'ci', scope: 'push', tokenHash: 'secret-hash', expiresAt: null }, Date.now())
  assert.equal((await b.tokens.byHash('secret-hash'))?.revokedAt, null, 'a new token works at the other replica')
  assert.equal(await a.tokens.revoke(id, Date.now()), true)
  assert.notEqual((await b.tokens.byHash('secret-hash'))?.revokedAt, null, 'and, revoked at one, is refused at the other with no delay')
})

test('uploads racing gc\'s marking never leave a narinfo naming a file that is not live', async (t) => {
  const [uploader, collector, third] = await replicas(t, 3) as [PgMetadataStore, PgMetadataStore, PgMetadataStore]
  let created = 0
  let refused = 0
  for (let round = 0; round < 5; round++) {
    const files = await Promise.all(Array.from({ length: 20 }, async () => await liveNarFile(uploader, 100)))
    const paths = files.map(() => testPath())
    const inserts = files.map(async (file, i): Promise<InsertNarinfoOutcome> =>
      await uploader.narinfos.insert(narinfoRecord(paths[i]!, file), PROVENANCE, { upstreamReferences: false, now: 100 }))
    const marks = [collector, third, collector].map(async s => await s.narFiles.markUnnamedDeleting(1000, 1000))
    const outcomes = await Promise.all(inserts)
    await Promise.all(marks)
    for (const [i, outcome] of outcomes.entries()) {
      const state = (await collector.narFiles.getById(files[i]!.id))?.state
      if (outcome.kind === 'created') {
        created++
        assert.equal(state, 'live', 'a file a narinfo names stays live')
      } else {
        refused++
        assert.equal(outcome.kind, 'nar-file-not-live')
        assert.equal(state, 'deleting')
      }
    }
  }
  assert.deepEqual(await collector.narinfos.withoutLiveNarFile(), [])
  assert.equal(created + refused, 100)
  t.diagnostic(`${created} narinfos won their race, ${refused} found their file being deleted`)
})

test('a narinfo inserted while its reference is removed is either refused or removed with it: closures stay whole', async (t) => {
  const [uploader, remover] = await replicas(t, 2) as [PgMetadataStore, PgMetadataStore]
  let kept = 0
  for (let round = 0; round < 5; round++) {
    const deps = Array.from({ length: 15 }, () => testPath('dep'))
    await Promise.all(deps.map(async dep => await storedPath(uploader, dep)))
    const tops = deps.map(() => testPath('top'))
    const topFiles = await Promise.all(tops.map(async () => await liveNarFile(uploader)))
    const inserts = tops.map(async (top, i) =>
      await uploader.narinfos.insert(narinfoRecord(top, topFiles[i]!, [deps[i]!]), PROVENANCE, { upstreamReferences: false, now: 1 }))
    const removals = deps.map(async dep => await remover.narinfos.remove({ hashParts: [dep.hashPart] }))
    const outcomes = await Promise.all(inserts)
    await Promise.all(removals)
    for (const [i, outcome] of outcomes.entries()) {
      assert.ok(outcome.kind === 'created' || outcome.kind === 'missing-references', outcome.kind)
      if (outcome.kind === 'created' && await remover.narinfos.has(tops[i]!.hashPart)) kept++
    }
    assert.deepEqual(await remover.narinfos.missingReferences(), [], 'no narinfo names a reference the cache cannot give')
  }
  assert.equal(kept, 0, 'every dep was removed, so no top may remain')
})
