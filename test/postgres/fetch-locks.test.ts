/**
 * The turns to fetch an upstream NAR across replicas (db/postgres/fetch-locks.ts), each replica a
 * PgFetchLocks of its own on one PostgreSQL: one holds a NAR's turn at a time, the others wait
 * until it is released or its session ends, and other NARs are not held up.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { parseDatabaseUrl, type PostgresLocation } from '../../src/db/database-url.js'
import { PgFetchLocks } from '../../src/db/postgres/fetch-locks.js'
import { createDatabase, postgresEngine } from '../helpers/postgres.js'

async function replicas (t: { after: (fn: () => Promise<void>) => void }): Promise<[PgFetchLocks, PgFetchLocks]> {
  const db = await createDatabase(postgresEngine())
  const location = parseDatabaseUrl(db.url) as PostgresLocation
  const locks: [PgFetchLocks, PgFetchLocks] = [new PgFetchLocks(location), new PgFetchLocks(location)]
  t.after(async () => {
    await Promise.all(locks.map(async l => { await l.close() }))
    await db.drop()
  })
  return locks
}

const FILE = '1nw2z5rnwzfp1bzqxwv5d81rigdhkl6bv19789v4vg4g9bpdc22g'
const OTHER = '0a8wm6hxwk1ya2b7xy8lbqy8s0zk4xj2bpbw54yq1yjyzf9ld0ga'

test('one replica holds a NAR\'s turn; the other waits until it is released, then looks again and gets it', async (t) => {
  const [a, b] = await replicas(t)
  const held = await a.claim(FILE)
  assert.equal(held.kind, 'mine')
  assert.equal((await b.claim(OTHER)).kind, 'mine', 'another NAR is not held up')
  let settled: Awaited<ReturnType<PgFetchLocks['claim']>> | undefined
  const waiting = b.claim(FILE).then(turn => { settled = turn; return turn })
  await new Promise(resolve => setTimeout(resolve, 400))
  assert.equal(settled, undefined, 'the other replica waits while the turn is held')
  if (held.kind === 'mine') held.release('stored')
  assert.deepEqual(await waiting, { kind: 'settled', outcome: 'abandoned' }, 'released: it looks for the stored NAR again')
  assert.equal((await b.claim(FILE)).kind, 'mine', 'and, asking again, gets the turn')
})

test('a replica whose session ends (as a killed one\'s does) releases its turns: the waiter sees abandoned', async (t) => {
  const [a, b] = await replicas(t)
  assert.equal((await a.claim(FILE)).kind, 'mine')
  const waiting = b.claim(FILE)
  await new Promise(resolve => setTimeout(resolve, 200))
  await a.close()
  const started = Date.now()
  assert.deepEqual(await waiting, { kind: 'settled', outcome: 'abandoned' })
  assert.ok(Date.now() - started < 2000, 'seen within a few polls')
})
