/**
 * Which metadata store a cache uses, decided in one place from the database URL
 * (database-url.ts): the SQLite file in the data folder by default, or PostgreSQL. The
 * PostgreSQL store (and the pg driver) is loaded only when a database URL names it, so that every
 * process of the embedded default is spared its memory.
 */
import { existsSync } from 'node:fs'
import type { MetadataStore } from './metadata-store.js'
import { parseDatabaseUrl, type DatabaseLocation } from './database-url.js'
import { openSqliteMetadataStore } from './sqlite/store.js'

export interface OpenedMetadataStore {
  metadata: MetadataStore
  location: DatabaseLocation
  /** This call created the database (SQLite) or the schema (PostgreSQL): a first start. */
  created: boolean
}

export interface OpenMetadataOptions {
  /**
   * PostgreSQL: apply pending migrations (serve, migrate) rather than refuse a schema that is
   * behind. SQLite always migrates, as it always has.
   */
  migrate: boolean
}

/** `database`: a URL or SQLite path, or undefined for `defaultSqliteFile` (the data folder's). */
export async function openMetadataStore (database: string | undefined, defaultSqliteFile: string, options: OpenMetadataOptions): Promise<OpenedMetadataStore> {
  const location = parseDatabaseUrl(database ?? defaultSqliteFile)
  if (location.kind === 'postgres') {
    const { PgMetadataStore } = await import('./postgres/store.js')
    const metadata = await PgMetadataStore.open(location, { migrate: options.migrate })
    return { metadata, location, created: metadata.migrationsApplied.includes('0001_init.sql') }
  }
  const created = !existsSync(location.file)
  return { metadata: openSqliteMetadataStore(location.file), location, created }
}
