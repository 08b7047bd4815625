/**
 * Opens a cache's data folder, the one way every command and the server do it:
 *
 *   openDataDir  the metadata store (the SQLite file, created and migrated) and the blob store;
 *                nothing else on disk changes (fsck, gc, pin, token, migrate)
 *   openCache    that, plus the NAR store's folders and layout version, the trusted uploader
 *                keys, provenance, the audit log and the pages' reads: what a serving process
 *                needs (`narwhal serve`, its workers, the tests)
 *
 * Neither empties store/tmp: only a process that knows no other one serves the store may
 * (BlobStore.sweep), so the two that do call it themselves (serve, and the primary of
 * `serve --workers N`).
 */
import { existsSync, mkdirSync, readFileSync } from 'node:fs'
import type { Config } from '../config/config.js'
import { ConfigError } from '../config/values.js'
import type { MetadataStore } from '../db/metadata-store.js'
import { parseDatabaseUrl } from '../db/database-url.js'
import { openMetadataStore } from '../db/open-metadata-store.js'
import { AuditLog } from './audit-log.js'
import { Browse } from './browse.js'
import { Provenance } from './provenance.js'
import { NarwhalError } from '../errors.js'
import { parsePublicKey, TrustedKeys, type PublicKey } from '../signing/keys.js'
import type { BlobStore } from '../storage/blob-store.js'
import { layoutFor, type Layout } from '../storage/layout.js'
import { openBlobStore } from '../storage/open-blob-store.js'

export interface DataDir {
  layout: Layout
  metadata: MetadataStore
  blobs: BlobStore
  /** True when this call created the database, i.e. the first start on this data folder. */
  created: boolean
  /** Closes the metadata store and the blob store's connections. */
  close: () => Promise<void>
}

export interface OpenCache extends DataDir {
  trustedKeys: TrustedKeys
  provenance: Provenance
  /** Close it (AuditLog.close) before the database: it writes what is waiting. */
  audit: AuditLog
  browse: Browse
}

/** Configured keys, plus the key narwhal generated in the data folder on its first start. */
export function loadTrustedKeys (config: Readonly<Config>, layout: Layout): TrustedKeys {
  const keys: PublicKey[] = config.trustedKeys.map((text, i) => {
    try {
      return parsePublicKey(text)
    } catch (err) {
      throw new ConfigError(`trustedKeys[${i}]: ${err instanceof NarwhalError ? err.message : 'not a public key'} ` +
        '(expected NAME:BASE64 of 32 bytes, as written by nix-store --generate-binary-cache-key)')
    }
  })
  if (existsSync(layout.generatedPublicKey)) {
    const generated = parsePublicKey(readFileSync(layout.generatedPublicKey, 'utf8'))
    if (!keys.some(k => k.name === generated.name)) keys.push(generated)
  }
  return new TrustedKeys(keys)
}

/**
 * Where a cache is (config/config.ts): its data folder, and its database and storage when they
 * are not the embedded ones (null or absent: the SQLite file and the NAR folder in the data folder).
 */
export interface CacheLocation {
  dataDir: string
  database?: string | null
  storage?: { url: string | null, redirectNars?: boolean }
}

/**
 * Opens the cache's database and NAR storage: the SQLite file and the NAR folder in the data
 * folder by default, PostgreSQL (db/open-metadata-store.ts) and an S3 bucket
 * (storage/open-blob-store.ts) when configured. Both URLs are parsed before anything is created,
 * so a malformed one changes nothing; the database URL is never shown (it may hold a password).
 * `prepareStore`: also make the data folder's NAR store and check (or write) its layout version
 * (a bucket is checked by the first call that uses it: serve's sweep, fsck's check).
 * `migrate: false`: refuse a PostgreSQL schema that is missing or behind rather than migrate it.
 */
export async function openDataDir (location: CacheLocation, options: { prepareStore?: boolean, migrate?: boolean } = {}): Promise<DataDir> {
  if (location.database != null) parseDatabaseUrl(location.database)
  const { dataDir } = location
  const layout = layoutFor(dataDir)
  const storage = await openBlobStore(layout, { url: location.storage?.url ?? null, redirectNars: location.storage?.redirectNars ?? false })
  try {
    mkdirSync(dataDir, { recursive: true })
    // Serve and every command migrate, so replicas and commands of one version agree on the schema;
    // fsck (migrate: false) does not: a database with no schema is not a clean cache.
    const { metadata, created } = await openMetadataStore(location.database ?? undefined, layout.database, { migrate: options.migrate ?? true })
    try {
      if (options.prepareStore === true) storage.folder?.init()
    } catch (err) {
      await metadata.close()
      throw err
    }
    return {
      layout,
      metadata,
      blobs: storage.blobs,
      created,
      close: async () => {
        storage.close()
        await metadata.close()
      }
    }
  } catch (err) {
    storage.close()
    throw err
  }
}

export async function openCache (config: Readonly<Config>): Promise<OpenCache> {
  const opened = await openDataDir(config, { prepareStore: true })
  return {
    ...opened,
    trustedKeys: loadTrustedKeys(config, opened.layout),
    provenance: new Provenance(opened.metadata),
    audit: new AuditLog(opened.metadata.audit, { maxEntries: config.audit.maxEntries }),
    browse: new Browse(opened.metadata)
  }
}
