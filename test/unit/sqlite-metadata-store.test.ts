/**
 * SqliteMetadataStore against the behaviour every MetadataStore backend shares
 * (test/helpers/metadata-store-contract.ts; PostgreSQL runs the same body in test/postgres).
 */
import { mkdtempSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { openSqliteMetadataStore } from '../../src/db/sqlite/store.js'
import { metadataStoreContract } from '../helpers/metadata-store-contract.js'

metadataStoreContract('SQLite', async () => openSqliteMetadataStore(path.join(mkdtempSync(path.join(os.tmpdir(), 'narwhal-meta-')), 'narwhal.db')))
