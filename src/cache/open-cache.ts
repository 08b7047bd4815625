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
import { ConfigError } from '../config/config.js'
import type { MetadataStore } from '../db/metadata-store.js'
import { parseDatabaseUrl } from '../db/database-url.js'
import { openMetadataStore } from '../db/open-metadata-store.js'
import { AuditLog } from './audit-log.js'
import { Browse } from './browse.js'
import { Provenance } from './provenance.js'
import { NarwhalError } from '../errors.js'
import { parsePublicKey, TrustedKeys, type PublicKey } from '../signing/keys.js'
import type { BlobStore } from '../storage/blob-store.js'
import { FileBlobStore } from '../storage/file-blob-store.js'
import { layoutFor, type Layout } from '../storage/layout.js'
import { parseS3Url } from '../storage/s3-url.js'

export interface DataDir {
  layout: Layout
  metadata: MetadataStore
  blobs: BlobStore
  /** True when this call created the database, i.e. the first start on this data folder. */
  created: boolean
  /** Closes the metadata store. */
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
  storage?: { url: string | null }
}

/**
 * Only the embedded database and storage can be opened yet (issue 20): say so before anything is
 * created. A storage URL is parsed first, so a malformed one is named as such (storage/s3-url.ts).
 * The database URL is not shown: it may hold a password.
 */
function refuseUnwired (location: CacheLocation): void {
  const storageUrl = location.storage?.url ?? null
  if (storageUrl !== null) parseS3Url(storageUrl)
  // The database half is wired: openMetadataStore (db/open-metadata-store.ts) opens PostgreSQL.
  if (location.database != null) parseDatabaseUrl(location.database)
  const unwired = [
    storageUrl === null ? undefined : `the S3 storage ${storageUrl}`
  ].filter(w => w !== undefined)
  if (unwired.length > 0) {
    throw new ConfigError(`${unwired.join(' and ')}: not wired yet in this version of narwhal; ` +
      'leave storage unset to use the NAR folder in the data folder')
  }
}

/** `prepareStore`: also make the NAR store's folders and check (or write) its layout version. */
export async function openDataDir (location: CacheLocation, options: { prepareStore?: boolean } = {}): Promise<DataDir> {
  refuseUnwired(location)
  const { dataDir } = location
  const layout = layoutFor(dataDir)
  mkdirSync(dataDir, { recursive: true })
  // The SQLite file in the data folder, or PostgreSQL (created/migrated like the file: serve and
  // every command migrate, so replicas and commands of one version agree on the schema).
  const { metadata, created } = await openMetadataStore(location.database ?? undefined, layout.database, { migrate: true })
  const blobs = new FileBlobStore(layout)
  if (options.prepareStore === true) blobs.init()
  return { layout, metadata, blobs, created, close: async () => await metadata.close() }
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
