/**
 * PostgreSQL going away and coming back, on a cluster of this test's own (the shared one serves
 * the other test files meanwhile): statements and transactions ride through a restart, the
 * change listener reconnects by itself, and a server that stays down is a clear 503 error.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import path from 'node:path'
import { parseDatabaseUrl, type PostgresLocation } from '../../src/db/database-url.js'
import { ChangeListener } from '../../src/db/postgres/change-listener.js'
import { migratePostgres } from '../../src/db/postgres/migrate.js'
import { PgPool } from '../../src/db/postgres/pool.js'
import { PgMetadataStore } from '../../src/db/postgres/store.js'
import { isNarwhalError } from '../../src/errors.js'
import { storedPath, testPath } from '../helpers/metadata-store-contract.js'
import { run } from '../helpers/nix.js'
import { ownPostgres } from '../helpers/own-engines.js'
import { createDatabase, restartPostgres } from '../helpers/postgres.js'

const SCRIPT = path.resolve('scripts/test-engines/postgres.sh')

async function waitFor (what: string, check: () => boolean, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms
  while (!check()) {
    if (Date.now() > deadline) assert.fail(`${what} within ${ms} ms`)
    await new Promise(resolve => setTimeout(resolve, 20))
  }
}

test('a PostgreSQL restart: statements and transactions go on, the listener comes back; a server that stays down is a 503', async (t) => {
  const engine = await ownPostgres()
  t.after(engine.stop)
  const db = await createDatabase(engine)
  const location = parseDatabaseUrl(db.url) as PostgresLocation
  const pool = new PgPool(location)
  t.after(async () => { await pool.close() })
  await migratePostgres(pool)
  const listener = new ChangeListener(location)
  await listener.start()
  t.after(async () => { await listener.close() })
  assert.equal(listener.isListening, true)
  // Connections in the pool, idle when the server goes away.
  await Promise.all([1, 2, 3].map(async () => await pool.query('SELECT pg_sleep(0.05)')))

  await restartPostgres(engine)
  assert.equal((await pool.query<{ one: number }>('SELECT 1 AS one')).rows[0]?.one, 1, 'a statement right after the restart')
  const written = await pool.transaction(async (tx) => {
    await tx.query("INSERT INTO pins (hash_part, store_path, created_at) VALUES ('a', '/nix/store/a', 1)")
    return (await tx.query<{ n: number }>('SELECT count(*) AS n FROM pins')).rows[0]?.n
  })
  assert.equal(written, 1, 'a transaction right after the restart')

  await pool.query("INSERT INTO nar_files (file_hash, file_size, compression, nar_hash, nar_size, created_at, last_accessed_at) VALUES ('f', 1, 'none', 'h', 1, 1, 1)")
  await waitFor('the listener is back', () => listener.isListening)
  const before = listener.current()
  await pool.query("UPDATE nar_files SET state = 'deleting'")
  await waitFor('a change committed after the restart is heard', () => listener.current() !== before, 1000)

  // A restart while a statement runs: it is run again on a new connection.
  const slow = pool.query<{ one: number }>('SELECT 1 AS one FROM pg_sleep(0.5)')
  await new Promise(resolve => setTimeout(resolve, 100))
  await restartPostgres(engine)
  assert.equal((await slow).rows[0]?.one, 1)

  await run(SCRIPT, ['stop', engine.dir])
  const started = Date.now()
  await assert.rejects(pool.query('SELECT 1'), (err: unknown) =>
    isNarwhalError(err) && err.code === 'NARWHAL_DATABASE_UNAVAILABLE' && err.statusCode === 503 && /cannot reach it \(ECONNREFUSED\)/.test(err.message) && !err.message.includes('127.0.0.1'))
  assert.ok(Date.now() - started < 10_000, 'gives up after its window, not never')
  await waitFor('the listener notices', () => !listener.isListening)
  assert.notEqual(listener.current(), listener.current(), 'nothing in memory is trusted while not listening')
})

test('a replica\'s store serves on through a PostgreSQL restart, and hears the writes made after it', async (t) => {
  const engine = await ownPostgres()
  t.after(engine.stop)
  const db = await createDatabase(engine)
  const location = parseDatabaseUrl(db.url) as PostgresLocation
  const [writer, reader] = [await PgMetadataStore.open(location, { migrate: true }), await PgMetadataStore.open(location)]
  t.after(async () => { await writer.close(); await reader.close() })
  const first = testPath()
  await storedPath(writer, first)
  assert.ok(await reader.narinfos.body(first.hashPart) !== undefined)

  await restartPostgres(engine)
  assert.ok(await reader.narinfos.body(first.hashPart) !== undefined, 'served right after the restart')
  const second = testPath()
  await storedPath(writer, second)
  const started = Date.now()
  while (await reader.narinfos.body(second.hashPart) === undefined) {
    assert.ok(Date.now() - started < 3000, 'a write after the restart is served at the other replica')
    await new Promise(resolve => setTimeout(resolve, 20))
  }
  // Memory is trusted again only once its change listener is back.
  while (reader.narinfos.peekBody(second.hashPart) === undefined) {
    assert.ok(Date.now() - started < 5000, 'the replica listens for changes again and keeps narinfos in memory')
    await reader.narinfos.body(second.hashPart)
    await new Promise(resolve => setTimeout(resolve, 20))
  }
})
