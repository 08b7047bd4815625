/**
 * `narwhal migrate`: apply pending database migrations without serving (serve does it on start).
 * With `--database postgres://…` (or NARWHAL_DATABASE_URL) it creates or upgrades the narwhal
 * schema in that PostgreSQL database, which must exist: narwhal never creates databases.
 */
import { loadConfig } from '../../config/config.js'
import { openDataDir } from '../../cache/open-cache.js'
import { parseDatabaseUrl, type PostgresLocation } from '../../db/database-url.js'
import { migratePostgres } from '../../db/postgres/migrate.js'
import { PgPool } from '../../db/postgres/pool.js'
import { parse } from '../usage.js'

export async function migrateCommand (args: string[]): Promise<number> {
  const { values } = parse(args, { data: { type: 'string' }, config: { type: 'string' }, database: { type: 'string' } })
  const databaseUrl = values.database ?? (process.env.NARWHAL_DATABASE_URL === '' ? undefined : process.env.NARWHAL_DATABASE_URL)
  const location = databaseUrl === undefined ? undefined : parseDatabaseUrl(databaseUrl)
  if (location?.kind === 'postgres') return await migratePostgresCommand(location)
  const config = loadConfig({ configFile: values.config, dataDir: values.data })
  const { created, close } = openDataDir(config.dataDir)
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
