/**
 * `narwhal migrate`: apply pending database migrations without serving (serve does it on start).
 * With a PostgreSQL database (`--database postgres://…`, NARWHAL_DATABASE_URL or the config
 * file's `database`) it creates or upgrades the narwhal schema there; the database must exist:
 * narwhal never creates databases.
 */
import { openDataDir } from '../../cache/open-cache.js'
import { parseDatabaseUrl, type PostgresLocation } from '../../db/database-url.js'
import { migratePostgres } from '../../db/postgres/migrate.js'
import { PgPool } from '../../db/postgres/pool.js'
import { CACHE_OPTIONS, loadCacheConfig } from '../cache-options.js'
import { parse } from '../usage.js'

export async function migrateCommand (args: string[]): Promise<number> {
  const { values } = parse(args, CACHE_OPTIONS)
  const config = loadCacheConfig(values)
  const location = config.database == null ? undefined : parseDatabaseUrl(config.database)
  if (location?.kind === 'postgres') return await migratePostgresCommand(location)
  const { created, close } = await openDataDir(config)
  await close()
  process.stdout.write(`${config.dataDir}: database ${created ? 'created' : 'up to date'}\n`)
  return 0
}

async function migratePostgresCommand (location: PostgresLocation): Promise<number> {
  const pool = new PgPool(location, { max: 1 })
  try {
    const applied = await migratePostgres(pool)
    process.stdout.write(`${location.redacted}: ${applied.length === 0 ? 'schema up to date' : `applied ${applied.join(', ')}`}\n`)
    return 0
  } finally {
    await pool.close()
  }
}
