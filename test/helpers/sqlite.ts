/** The SQLite connection behind a cache's metadata store, for tests about SQLite itself (its rows, its locks). */
import type { Db } from '../../src/db/database.js'
import type { MetadataStore } from '../../src/db/metadata-store.js'
import { SqliteMetadataStore } from '../../src/db/sqlite/store.js'

export function sqliteDb (metadata: MetadataStore): Db {
  if (!(metadata instanceof SqliteMetadataStore)) throw new Error('this test reads the SQLite file itself; the cache uses another metadata store')
  return metadata.database
}
