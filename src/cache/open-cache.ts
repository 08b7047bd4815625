/**
 * Opens a cache's data folder, the one way every command and the server do it:
 *
 *   openDataDir  the database (created and migrated) with Metadata, Retention and the blob store
 *                wired on its connection; nothing else on disk changes (fsck, gc, pin, token, migrate)
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
import { migrate, openDatabase, type Db } from '../db/database.js'
import { Metadata } from '../db/metadata.js'
import { Retention } from '../db/retention.js'
import { AuditLog } from './audit-log.js'
import { Browse } from './browse.js'
import { Provenance } from './provenance.js'
import { NarwhalError } from '../errors.js'
import { parsePublicKey, TrustedKeys, type PublicKey } from '../signing/keys.js'
import type { BlobStore } from '../storage/blob-store.js'
import { FileBlobStore } from '../storage/file-blob-store.js'
import { layoutFor, type Layout } from '../storage/layout.js'

export interface DataDir {
  layout: Layout
  db: Db
  metadata: Metadata
  retention: Retention
  blobs: BlobStore
  /** True when this call created the database, i.e. the first start on this data folder. */
  created: boolean
  /** Closes the database connection. */
  close: () => void
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

/** `prepareStore`: also make the NAR store's folders and check (or write) its layout version. */
export function openDataDir (dataDir: string, options: { prepareStore?: boolean } = {}): DataDir {
  const layout = layoutFor(dataDir)
  mkdirSync(dataDir, { recursive: true })
  const created = !existsSync(layout.database)
  const db = openDatabase(layout.database)
  migrate(db)
  const blobs = new FileBlobStore(layout)
  if (options.prepareStore === true) blobs.init()
  return { layout, db, metadata: new Metadata(db), retention: new Retention(db), blobs, created, close: () => db.close() }
}

export function openCache (config: Readonly<Config>): OpenCache {
  const opened = openDataDir(config.dataDir, { prepareStore: true })
  return {
    ...opened,
    trustedKeys: loadTrustedKeys(config, opened.layout),
    provenance: new Provenance(opened.db),
    audit: new AuditLog(opened.db, { maxEntries: config.audit.maxEntries }),
    browse: new Browse(opened.db)
  }
}
