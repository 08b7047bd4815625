/**
 * PgMetadataStore against the real PostgreSQL: the behaviour every MetadataStore backend shares
 * (test/helpers/metadata-store-contract.ts), each test in a fresh database.
 */
import { parseDatabaseUrl, type PostgresLocation } from '../../src/db/database-url.js'
import { PgMetadataStore } from '../../src/db/postgres/store.js'
import { metadataStoreContract } from '../helpers/metadata-store-contract.js'
import { createDatabase, postgresEngine } from '../helpers/postgres.js'

metadataStoreContract('PostgreSQL', async () => {
  const db = await createDatabase(postgresEngine())
  const store = await PgMetadataStore.open(parseDatabaseUrl(db.url) as PostgresLocation, { migrate: true, maxConnections: 4 })
  const close = store.close.bind(store)
  // The database goes with the store.
  store.close = async () => { await close(); await db.drop() }
  return store
})
