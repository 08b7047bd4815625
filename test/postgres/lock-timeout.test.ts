/**
 * No statement waits forever on PostgreSQL: while another session holds a narinfo's row lock, a
 * removal of that path fails with NARWHAL_BUSY (503, Retry-After) once the lock timeout passes,
 * and succeeds as soon as the lock is gone.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import pg from 'pg'
import { parseDatabaseUrl, type PostgresLocation } from '../../src/db/database-url.js'
import { LOCK_TIMEOUT_MS } from '../../src/db/postgres/pool.js'
import { PgMetadataStore } from '../../src/db/postgres/store.js'
import { isNarwhalError } from '../../src/errors.js'
import { storedPath, testPath } from '../helpers/metadata-store-contract.js'
import { createDatabase, postgresEngine } from '../helpers/postgres.js'

test('a narinfo row locked by another session: the removal fails with NARWHAL_BUSY within the lock timeout, then succeeds', { timeout: 30_000 }, async (t) => {
  const db = await createDatabase(postgresEngine())
  const store = await PgMetadataStore.open(parseDatabaseUrl(db.url) as PostgresLocation, { migrate: true })
  const path = testPath()
  await storedPath(store, path)

  const other = new pg.Client({ connectionString: db.url })
  await other.connect()
  // The sessions end before the database is dropped (its FORCE would cut them).
  t.after(async () => { await other.end(); await store.close(); await db.drop() })
  await other.query('BEGIN')
  const locked = await other.query('SELECT id FROM narinfos WHERE hash_part = $1 FOR UPDATE', [path.hashPart])
  assert.equal(locked.rowCount, 1)

  const started = Date.now()
  await assert.rejects(store.narinfos.remove({ hashParts: [path.hashPart] }),
    (err: unknown) => isNarwhalError(err) && err.code === 'NARWHAL_BUSY' && err.statusCode === 503)
  const waited = Date.now() - started
  assert.ok(waited >= LOCK_TIMEOUT_MS - 100 && waited < LOCK_TIMEOUT_MS + 3000, `waited ${waited} ms`)
  assert.ok(await store.narinfos.get(path.hashPart) !== undefined, 'the refused removal removed nothing')

  await other.query('ROLLBACK')
  const outcome = await store.narinfos.remove({ hashParts: [path.hashPart] })
  assert.ok(outcome !== undefined)
  assert.equal(await store.narinfos.get(path.hashPart), undefined)
})
