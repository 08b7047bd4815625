/**
 * The real PostgreSQL for the PostgreSQL tests, started by test/run.sh through
 * scripts/test-engines/postgres.sh, which passes a superuser's URL in NARWHAL_TEST_DATABASE_URL
 * and its folder in NARWHAL_TEST_POSTGRES_DIR (for restarts).
 *
 * Each test makes its own database (narwhal never creates one) and drops it afterwards.
 */
import { randomBytes } from 'node:crypto'
import path from 'node:path'
import pg from 'pg'
import { runOk } from './nix.js'

export interface PostgresEngine {
  /** postgres://postgres@127.0.0.1:PORT/narwhal_test: a superuser, trust authentication. */
  url: string
  dir: string
}

export function postgresEngine (): PostgresEngine {
  const url = process.env.NARWHAL_TEST_DATABASE_URL
  const dir = process.env.NARWHAL_TEST_POSTGRES_DIR
  if (url === undefined || dir === undefined) {
    throw new Error('the PostgreSQL tests need a running PostgreSQL: run them through test/run.sh, or start one with ' +
      '`scripts/test-engines/postgres.sh start DIR` and `source DIR/env` first')
  }
  return { url, dir }
}

/** Runs `sql` as the superuser on the engine's own database. */
export async function adminQuery (engine: PostgresEngine, sql: string): Promise<pg.QueryResult> {
  const client = new pg.Client({ connectionString: engine.url })
  await client.connect()
  try {
    return await client.query(sql)
  } finally {
    await client.end()
  }
}

export interface TestDatabase {
  /** postgres://…/narwhal_t_<random>: empty, no narwhal schema yet. */
  url: string
  name: string
  drop: () => Promise<void>
}

/** A new empty database; `drop` ends its sessions and removes it. */
export async function createDatabase (engine: PostgresEngine): Promise<TestDatabase> {
  const name = `narwhal_t_${randomBytes(6).toString('hex')}`
  await adminQuery(engine, `CREATE DATABASE ${name}`)
  const url = new URL(engine.url)
  url.pathname = '/' + name
  return {
    url: url.href,
    name,
    drop: async () => { await adminQuery(engine, `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`) }
  }
}

/** Restarts the server (fast shutdown: every connection is closed), as an operator's restart does. */
export async function restartPostgres (engine: PostgresEngine): Promise<void> {
  await runOk(path.resolve('scripts/test-engines/postgres.sh'), ['restart', engine.dir])
}
