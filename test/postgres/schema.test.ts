/**
 * The PostgreSQL schema against the real engine: `migratePostgres` creates it once however many
 * replicas start together, a process that does not migrate refuses a schema that is missing or
 * newer, and `narwhal migrate --database postgres://…` does the same from the command line.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import path from 'node:path'
import { parseDatabaseUrl, type PostgresLocation } from '../../src/db/database-url.js'
import { openMetadataStore } from '../../src/db/open-metadata-store.js'
import { checkPostgresSchema, migratePostgres } from '../../src/db/postgres/migrate.js'
import { PgPool } from '../../src/db/postgres/pool.js'
import { PgMetadataStore } from '../../src/db/postgres/store.js'
import { isNarwhalError } from '../../src/errors.js'
import { run, tempDir } from '../helpers/nix.js'
import { createDatabase, postgresEngine } from '../helpers/postgres.js'
import { CLI } from '../helpers/server-process.js'

function location (url: string): PostgresLocation {
  const parsed = parseDatabaseUrl(url)
  assert.equal(parsed.kind, 'postgres')
  return parsed as PostgresLocation
}

test('migrations are applied once, even by several processes at once, and recorded', async (t) => {
  const db = await createDatabase(postgresEngine())
  t.after(db.drop)
  const pools = [0, 1, 2].map(() => new PgPool(location(db.url)))
  t.after(async () => { await Promise.all(pools.map(async p => { await p.close() })) })

  await assert.rejects(checkPostgresSchema(pools[0]!), (err: unknown) =>
    isNarwhalError(err) && err.code === 'NARWHAL_DATABASE_UNAVAILABLE' && /no narwhal schema.*narwhal migrate/.test(err.message))

  const applied = await Promise.all(pools.map(async p => await migratePostgres(p)))
  assert.deepEqual(applied.flat().sort(), ['0001_init.sql', '0002_cache_moves.sql'], 'exactly one of them applied each')
  assert.deepEqual(await migratePostgres(pools[0]!), [], 'nothing left to apply')
  await checkPostgresSchema(pools[1]!)

  const tables = await pools[0]!.query<{ name: string }>(
    "SELECT table_name AS name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY table_name")
  assert.deepEqual(tables.rows.map(r => r.name), ['audit_log', 'aux_files', 'cache_moves', 'gc_runs', 'nar_files', 'narinfo_refs', 'narinfos',
    'narwhal_schema', 'pins', 'provenance', 'tokens', 'upstream_narinfos'])
  const state = await pools[0]!.query<{ d: string }>(
    "SELECT column_default AS d FROM information_schema.columns WHERE table_name = 'nar_files' AND column_name = 'state'")
  assert.match(state.rows[0]?.d ?? '', /'live'/, 'NAR files are live unless said otherwise')

  await pools[0]!.query('INSERT INTO narwhal_schema (version, name, applied_at) VALUES (99, $1, 0)', ['0099_future.sql'])
  await assert.rejects(checkPostgresSchema(pools[0]!), (err: unknown) =>
    isNarwhalError(err) && err.code === 'NARWHAL_DATABASE_UNAVAILABLE' && /newer than this narwhal knows/.test(err.message))
})

test('`narwhal migrate --database postgres://…` creates the schema, then finds it current; a missing database is named', async (t) => {
  const engine = postgresEngine()
  const db = await createDatabase(engine)
  t.after(db.drop)
  const first = await run('node', [CLI, 'migrate', '--database', db.url])
  assert.equal(first.code, 0, first.stderr)
  assert.match(first.stdout, /applied 0001_init\.sql/)
  const again = await run('node', [CLI, 'migrate'], { env: { ...process.env, NARWHAL_DATABASE_URL: db.url } })
  assert.equal(again.code, 0, again.stderr)
  assert.match(again.stdout, /schema up to date/)

  const missing = new URL(db.url)
  missing.pathname = '/narwhal_no_such_database'
  const refused = await run('node', [CLI, 'migrate', '--database', missing.href])
  assert.equal(refused.code, 2)
  assert.match(refused.stderr, /does not exist \(narwhal never creates one/)
})

test('openMetadataStore: the data folder\'s SQLite file by default, PostgreSQL for a postgres:// URL, refusing a schema not migrated', async (t) => {
  const dir = tempDir('narwhal-open-')
  const file = path.join(dir, 'narwhal.db')
  const sqlite = await openMetadataStore(undefined, file, { migrate: false })
  assert.equal(sqlite.location.kind, 'sqlite')
  assert.equal(sqlite.created, true)
  await sqlite.metadata.close()
  const again = await openMetadataStore(undefined, file, { migrate: false })
  assert.equal(again.created, false)
  await again.metadata.close()

  const db = await createDatabase(postgresEngine())
  t.after(db.drop)
  await assert.rejects(openMetadataStore(db.url, file, { migrate: false }), (err: unknown) =>
    isNarwhalError(err) && err.code === 'NARWHAL_DATABASE_UNAVAILABLE' && /narwhal migrate/.test(err.message))
  const created = await openMetadataStore(db.url, file, { migrate: true })
  assert.equal(created.location.kind, 'postgres')
  assert.equal(created.created, true)
  assert.ok(created.metadata instanceof PgMetadataStore)
  await created.metadata.close()
  const reopened = await openMetadataStore(db.url, file, { migrate: false })
  assert.equal(reopened.created, false)
  await reopened.metadata.close()
})
