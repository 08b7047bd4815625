/**
 * The PostgreSQL schema: migrations/postgres/NNNN_*.sql, applied in order, each in its own
 * transaction together with its row in narwhal_schema (which records what was applied). As for
 * SQLite, a shipped file is never edited; a change is a new file. Replicas starting together
 * take turns (an advisory lock), so each migration is applied once.
 */
import { fileURLToPath } from 'node:url'
import { listMigrations } from '../database.js'
import { lockJobForTransaction } from './advisory-lock.js'
import { unavailable, type PgPool } from './pool.js'

/** Next to dist/ and src/ at the package root, like the SQLite migrations. */
export const PG_MIGRATIONS_DIR = fileURLToPath(new URL('../../../../migrations/postgres/', import.meta.url))

const SCHEMA_TABLE = `CREATE TABLE IF NOT EXISTS narwhal_schema (
  version integer PRIMARY KEY,
  name text NOT NULL,
  applied_at bigint NOT NULL
)`

/** Applies pending migrations; returns the names applied (none when the schema is current). */
export async function migratePostgres (pool: PgPool, dir = PG_MIGRATIONS_DIR): Promise<string[]> {
  const applied: string[] = []
  for (const m of listMigrations(dir)) {
    const done = await pool.transaction(async (tx) => {
      // Another process may be migrating (the lock below waits for it), and a migration may take long.
      await tx.query('SET LOCAL lock_timeout = 0')
      await tx.query('SET LOCAL statement_timeout = 0')
      await lockJobForTransaction(tx, 'migrate')
      await tx.query(SCHEMA_TABLE)
      const current = await tx.query<{ version: number | null }>('SELECT max(version) AS version FROM narwhal_schema')
      if ((current.rows[0]?.version ?? 0) >= m.version) return false
      await tx.query(m.sql)
      await tx.query('INSERT INTO narwhal_schema (version, name, applied_at) VALUES ($1, $2, $3)', [m.version, m.name, Date.now()])
      return true
    })
    if (done) applied.push(m.name)
  }
  return applied
}

/**
 * Refuses to go on with a schema that is missing, behind, or newer than this narwhal knows:
 * what a process that does not migrate (a replica started with an old binary) checks first.
 */
export async function checkPostgresSchema (pool: PgPool, dir = PG_MIGRATIONS_DIR): Promise<void> {
  const known = Math.max(0, ...listMigrations(dir).map(m => m.version))
  const exists = await pool.query<{ found: string | null }>("SELECT to_regclass('narwhal_schema')::text AS found")
  const version = exists.rows[0]?.found == null
    ? 0
    : (await pool.query<{ version: number | null }>('SELECT max(version) AS version FROM narwhal_schema')).rows[0]?.version ?? 0
  if (version === 0) throw unavailable('it holds no narwhal schema (not migrated): run `narwhal migrate --database …` first')
  if (version < known) throw unavailable(`its narwhal schema is at version ${version}, this narwhal needs ${known}: run \`narwhal migrate --database …\``)
  if (version > known) throw unavailable(`its narwhal schema is at version ${version}, newer than this narwhal knows (${known}): upgrade narwhal`)
}
