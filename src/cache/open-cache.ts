/**
 * Opens a cache's data folder: database (migrated), NAR store (tmp/ emptied unless told not to)
 * and the trusted uploader keys. Shared by `narwhal serve` and the tests, so both run the same
 * start-up.
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
import { BlobStore } from '../storage/blob-store.js'
import { layoutFor, type Layout } from '../storage/layout.js'

export interface OpenCache {
  layout: Layout
  db: Db
  metadata: Metadata
  retention: Retention
  blobs: BlobStore
  trustedKeys: TrustedKeys
  provenance: Provenance
  /** Close it (AuditLog.close) before the database: it writes what is waiting. */
  audit: AuditLog
  browse: Browse
  /** True when this call created the database, i.e. the first start on this data folder. */
  created: boolean
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

export function openDataDir (dataDir: string): { layout: Layout, db: Db, created: boolean } {
  const layout = layoutFor(dataDir)
  mkdirSync(dataDir, { recursive: true })
  const created = !existsSync(layout.database)
  const db = openDatabase(layout.database)
  migrate(db)
  return { layout, db, created }
}

export interface OpenCacheOptions {
  /**
   * Remove interrupted uploads from store/tmp (the default). False in a worker of `narwhal serve
   * --workers N`: the primary emptied it before forking, and a worker restarted later would
   * delete the temp files of uploads its siblings are receiving.
   */
  emptyTmp?: boolean
}

export function openCache (config: Readonly<Config>, options: OpenCacheOptions = {}): OpenCache {
  const { layout, db, created } = openDataDir(config.dataDir)
  const blobs = new BlobStore(layout)
  blobs.init()
  if (options.emptyTmp ?? true) blobs.emptyTmp()
  const trustedKeys = loadTrustedKeys(config, layout)
  return {
    layout,
    db,
    metadata: new Metadata(db),
    retention: new Retention(db),
    blobs,
    trustedKeys,
    provenance: new Provenance(db),
    audit: new AuditLog(db, { maxEntries: config.audit.maxEntries }),
    browse: new Browse(db),
    created
  }
}
