/**
 * What replicas sharing one PostgreSQL coordinate through it: a commit at one is heard at the
 * others within a second (LISTEN/NOTIFY), read-time updates are not (they change nothing
 * served), and a single-writer job runs at one replica at a time (an advisory lock), taken over
 * at once when the session holding it dies.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { parseDatabaseUrl, type PostgresLocation } from '../../src/db/database-url.js'
import { withJobLock } from '../../src/db/postgres/advisory-lock.js'
import { ChangeListener } from '../../src/db/postgres/change-listener.js'
import { migratePostgres } from '../../src/db/postgres/migrate.js'
import { PgPool } from '../../src/db/postgres/pool.js'
import { createDatabase, postgresEngine, type TestDatabase } from '../helpers/postgres.js'

async function migrated (t: { after: (fn: () => Promise<void>) => void }): Promise<{ db: TestDatabase, location: PostgresLocation, pool: PgPool }> {
  const db = await createDatabase(postgresEngine())
  t.after(db.drop)
  const location = parseDatabaseUrl(db.url) as PostgresLocation
  const pool = new PgPool(location)
  t.after(async () => { await pool.close() })
  await migratePostgres(pool)
  return { db, location, pool }
}

async function settle (ms: number): Promise<void> { await new Promise(resolve => setTimeout(resolve, ms)) }

test('a commit at one replica is heard at every other within a second; read-time updates and rollbacks are not', async (t) => {
  const { location, pool } = await migrated(t)
  const listeners = [new ChangeListener(location), new ChangeListener(location)]
  await Promise.all(listeners.map(async l => { await l.start() }))
  t.after(async () => { await Promise.all(listeners.map(async l => { await l.close() })) })

  const quiet = listeners.map(l => l.current())
  await settle(100)
  assert.deepEqual(listeners.map(l => l.current()), quiet, 'nothing committed: the generation stays')

  await pool.query(`INSERT INTO nar_files (file_hash, file_size, compression, nar_hash, nar_size, created_at, last_accessed_at)
                    VALUES ('f1', 10, 'none', 'n1', 10, 1, 1)`)
  await settle(200)
  const before = listeners.map(l => l.current())
  const committedAt = Date.now()
  await pool.query(`INSERT INTO narinfos (hash_part, store_path, nar_file_id, nar_hash, nar_size, sigs, narinfo, created_at, last_accessed_at)
                    SELECT 'h1', '/nix/store/h1-x', id, 'n1', 10, '', 'StorePath: /nix/store/h1-x', 1, 1 FROM nar_files`)
  for (const [i, l] of listeners.entries()) {
    while (l.current() === before[i]) {
      assert.ok(Date.now() - committedAt < 1000, `replica ${i} heard of the commit within a second`)
      await settle(5)
    }
  }

  await settle(200)
  const afterInsert = listeners.map(l => l.current())
  await pool.query('UPDATE narinfos SET last_accessed_at = 2')
  await pool.query('UPDATE nar_files SET last_accessed_at = 2, created_at = 3')
  await pool.query(`INSERT INTO nar_files (file_hash, file_size, compression, nar_hash, nar_size, created_at, last_accessed_at, state)
                    VALUES ('f2', 10, 'none', 'n2', 10, 1, 1, 'pending')`)
  await pool.transaction(async (tx) => {
    await tx.query("UPDATE narinfos SET sigs = 'x'")
    await tx.query('SELECT 1/0').catch(() => {})
    throw new Error('roll back')
  }).catch(() => {})
  await settle(200)
  assert.deepEqual(listeners.map(l => l.current()), afterInsert, 'read times, a grace renewal, an upload\'s pending claim and a rolled-back write change nothing served')

  await pool.query("UPDATE nar_files SET state = 'deleting'")
  await settle(200)
  assert.ok(listeners.every((l, i) => l.current() !== afterInsert[i]), 'a NAR file state change is heard')
})

test('a single-writer job runs at one replica at a time, and is free again when its holder ends or dies', async (t) => {
  const { location, pool } = await migrated(t)
  const other = new PgPool(location)
  t.after(async () => { await other.close() })

  let release!: () => void
  const holding = new Promise<void>(resolve => { release = resolve })
  let entered!: () => void
  const inside = new Promise<void>(resolve => { entered = resolve })
  const first = withJobLock(pool, 'gc', async () => { entered(); await holding; return 'first' })
  await inside
  assert.deepEqual(await withJobLock(other, 'gc', async () => 'second'), { kind: 'busy' }, 'gc is running elsewhere')
  assert.deepEqual(await withJobLock(other, 'fsck', async () => 'fsck'), { kind: 'ran', value: 'fsck' }, 'another job is not held up')
  release()
  assert.deepEqual(await first, { kind: 'ran', value: 'first' })
  assert.deepEqual(await withJobLock(other, 'gc', async () => 'second'), { kind: 'ran', value: 'second' }, 'free once the first ended')

  // A replica killed mid-job: its session ends, and the lock with it.
  let stuckEntered!: () => void
  const stuckInside = new Promise<void>(resolve => { stuckEntered = resolve })
  const stuck = withJobLock(pool, 'gc', async (signal) => {
    stuckEntered()
    await new Promise(resolve => signal.addEventListener('abort', resolve))
    return 'told it lost the lock'
  })
  await stuckInside
  assert.deepEqual(await withJobLock(other, 'gc', async () => 'x'), { kind: 'busy' })
  await other.query("SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid()")
  let taken = await withJobLock(other, 'gc', async () => 'taken over')
  for (let i = 0; taken.kind === 'busy' && i < 50; i++) {
    await settle(20)
    taken = await withJobLock(other, 'gc', async () => 'taken over')
  }
  assert.deepEqual(taken, { kind: 'ran', value: 'taken over' })
  assert.deepEqual(await stuck, { kind: 'ran', value: 'told it lost the lock' }, 'the job whose session died is told, and nothing crashes')
})
