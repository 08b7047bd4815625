/**
 * The MetadataStore on PostgreSQL (`--database postgres://…`): what lets any number of replicas
 * share one cache. Facets in their own files; this one opens the pool and the change listener
 * and ties them together.
 *
 * Freshness across replicas: narinfo bodies, NAR file rows and upstream records are kept in
 * memory only while the change listener is connected and hears nothing (change-listener.ts);
 * tokens are never kept, so a revocation counts everywhere at once.
 */
import type { MetadataStore } from '../metadata-store.js'
import type { PostgresLocation } from '../database-url.js'
import { withJobLock, type LockedOutcome, type SingleWriterJob } from './advisory-lock.js'
import { pgAuxFileStore, pgTokenStore } from './aux-and-tokens.js'
import { pgBrowseStore } from './browse.js'
import { ChangeListener } from './change-listener.js'
import { pgMetadataLoad } from './load.js'
import { checkPostgresSchema, migratePostgres } from './migrate.js'
import { pgNarFileStore } from './nar-files.js'
import { pgNarinfoStore } from './narinfos.js'
import { PgPool } from './pool.js'
import { pgAuditStore, pgProvenanceStore } from './provenance-audit.js'
import { pgRetentionStore } from './retention.js'
import { pgUpstreamRecordStore } from './upstream-records.js'

export interface PgOpenOptions {
  /** Apply pending migrations first (serve, like SQLite), instead of refusing a schema that is behind. */
  migrate?: boolean
  /** Connections at most, per process (default 10). */
  maxConnections?: number
  /** Told of errors on idle connections (the server restarted); they are replaced by themselves. */
  onIdleError?: (err: Error) => void
}

export class PgMetadataStore implements MetadataStore {
  readonly narFiles
  readonly narinfos
  readonly aux
  readonly tokens
  readonly retention
  readonly provenance
  readonly audit
  readonly browse
  readonly upstreamRecords
  readonly load
  /** The migrations `open` applied (with `migrate`): ['0001_init.sql'] when it created the schema. */
  readonly migrationsApplied: string[]
  private readonly pool: PgPool
  private readonly listener: ChangeListener

  private constructor (pool: PgPool, listener: ChangeListener, migrationsApplied: string[]) {
    this.pool = pool
    this.listener = listener
    this.migrationsApplied = migrationsApplied
    this.narFiles = pgNarFileStore(pool, listener)
    this.narinfos = pgNarinfoStore(pool, listener)
    this.aux = pgAuxFileStore(pool)
    this.tokens = pgTokenStore(pool)
    this.retention = pgRetentionStore(pool)
    this.provenance = pgProvenanceStore(pool)
    this.audit = pgAuditStore(pool)
    this.browse = pgBrowseStore(pool)
    this.upstreamRecords = pgUpstreamRecordStore(pool, listener)
    this.load = pgMetadataLoad(pool)
  }

  /** Connects, checks (or migrates) the schema and starts listening; NARWHAL_DATABASE_UNAVAILABLE when it cannot. */
  static async open (location: PostgresLocation, options: PgOpenOptions = {}): Promise<PgMetadataStore> {
    const pool = new PgPool(location, { max: options.maxConnections, onIdleError: options.onIdleError })
    const listener = new ChangeListener(location)
    let applied: string[] = []
    try {
      if (options.migrate === true) applied = await migratePostgres(pool)
      else await checkPostgresSchema(pool)
      await listener.start()
    } catch (err) {
      await listener.close()
      await pool.close()
      throw err
    }
    return new PgMetadataStore(pool, listener, applied)
  }

  servedGeneration (): number {
    return this.listener.current()
  }

  /**
   * Runs a single-writer job (gc, fsck --repair) here unless another replica or command is running
   * it: 'busy' then, at once. See advisory-lock.ts.
   */
  async runExclusive<T> (job: SingleWriterJob, work: (signal: AbortSignal) => Promise<T>): Promise<LockedOutcome<T>> {
    return await withJobLock(this.pool, job, work)
  }

  /**
   * A commit that waits for the disk (it needs a transaction id to write a commit record) takes
   * every earlier commit made with synchronous_commit off along: WAL is flushed in order.
   */
  async flush (): Promise<void> {
    await this.pool.transaction(async tx => { await tx.query('SELECT txid_current()') })
  }

  async close (): Promise<void> {
    await this.listener.close()
    await this.pool.close()
  }
}
