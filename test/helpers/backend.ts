/**
 * Which database and NAR storage the behaviour tests' caches use: the one switch of the suite.
 *
 *   NARWHAL_TEST_BACKEND unset or `sqlite-folder`   the SQLite file and the NAR folder in the data folder
 *   NARWHAL_TEST_BACKEND=postgres-s3                a fresh PostgreSQL database and a fresh S3 bucket
 *                                                   per data folder (test/helpers/postgres.ts, s3.ts)
 *
 * Every helper that opens a cache or starts a server (server.ts startServer, server-process.ts
 * spawnServer/createToken, cacheConfig for tests that call openCache) and every test that runs the
 * CLI on a data folder asks `backendFor(dataDir)` where that cache lives; so a test names only
 * its data folder and runs on either backend. test/run.sh runs the behaviour suites once per backend.
 *
 * Tests about SQLite or the folder themselves (pragmas, fsync of files, file layout, tmp/ leftovers,
 * raw SQL) say so with `sqliteOnly(reason)`: skipped, with that reason, on postgres-s3.
 */
import { after } from 'node:test'
import { existsSync, readdirSync } from 'node:fs'
import path from 'node:path'
import { layoutFor } from '../../src/storage/layout.js'
import { createDatabase, postgresEngine, type TestDatabase } from './postgres.js'
import { createBucket, listBucket, removeBucket, s3Engine, storageUrl, unfinishedUploads, type S3Engine } from './s3.js'

export type BackendName = 'sqlite-folder' | 'postgres-s3'

function readBackend (): BackendName {
  const value = process.env.NARWHAL_TEST_BACKEND ?? 'sqlite-folder'
  if (value !== 'sqlite-folder' && value !== 'postgres-s3') {
    throw new Error(`NARWHAL_TEST_BACKEND=${value}: expected sqlite-folder (the default) or postgres-s3`)
  }
  return value
}

export const BACKEND: BackendName = readBackend()
export const ON_POSTGRES_S3 = BACKEND === 'postgres-s3'

/** Where one data folder's cache keeps its metadata and its NARs. */
export interface CacheBackend {
  /** config.database: a postgres:// URL, or null for the SQLite file in the data folder. */
  database: string | null
  /** config.storage.url: an s3:// URL, or null for the data folder's NAR store. */
  storage: string | null
  /** The same for a `narwhal` command: `--database URL --storage URL`, or nothing. */
  args: string[]
  /** The same for a `narwhal` process's environment: NARWHAL_DATABASE_URL, NARWHAL_STORAGE_URL, AWS_* keys. */
  env: Record<string, string>
  /**
   * What the NAR store holds: files under store/nar and store/tmp of the folder, or the bucket's
   * objects under nar/ and tmp/ plus its unfinished multipart uploads (`upload:KEY`).
   */
  stored: () => Promise<string[]>
}

function walk (dir: string): string[] {
  if (!existsSync(dir)) return []
  return readdirSync(dir, { withFileTypes: true }).flatMap(e =>
    e.isDirectory() ? walk(path.join(dir, e.name)) : [path.join(dir, e.name)])
}

const made = new Map<string, Promise<CacheBackend>>()
const cleanups: Array<() => Promise<void>> = []
let engines: { s3: S3Engine, pgUrl: string } | undefined

if (ON_POSTGRES_S3) {
  const s3 = s3Engine()
  engines = { s3, pgUrl: postgresEngine().url }
  // In-process S3 clients (startServer, openCache) and every `narwhal` child read the keys here.
  Object.assign(process.env, { AWS_ACCESS_KEY_ID: s3.accessKey, AWS_SECRET_ACCESS_KEY: s3.secretKey })
  // Each file's databases are dropped and buckets removed once its tests are done (servers closed).
  after(async () => {
    const results = await Promise.allSettled(cleanups.splice(0).map(async c => { await c() }))
    const failed = results.filter(r => r.status === 'rejected')
    if (failed.length > 0) console.error(`backend cleanup: ${failed.length} failed: ${String(failed[0]?.reason)}`)
  })
}

async function makeBackend (dataDir: string): Promise<CacheBackend> {
  if (engines === undefined) {
    const layout = layoutFor(dataDir)
    return { database: null, storage: null, args: [], env: {}, stored: async () => [...walk(layout.narDir), ...walk(layout.tmpDir)] }
  }
  const { s3 } = engines
  const db: TestDatabase = await createDatabase(postgresEngine())
  cleanups.push(db.drop)
  const bucket = await createBucket(s3, 'nw-both')
  cleanups.push(async () => { await removeBucket(s3, bucket) })
  const storage = storageUrl(s3, bucket)
  return {
    database: db.url,
    storage,
    args: ['--database', db.url, '--storage', storage],
    env: { NARWHAL_DATABASE_URL: db.url, NARWHAL_STORAGE_URL: storage, AWS_ACCESS_KEY_ID: s3.accessKey, AWS_SECRET_ACCESS_KEY: s3.secretKey },
    stored: async () => {
      const keys = [...(await listBucket(s3, bucket)).keys()].filter(k => k.startsWith('nar/') || k.startsWith('tmp/'))
      return [...keys, ...(await unfinishedUploads(s3, bucket)).map(k => `upload:${k}`)].sort()
    }
  }
}

/** True when `stored` shows an upload under way: a temp file (`.part`) or an unfinished multipart upload. */
export function uploadInFlight (stored: string[]): boolean {
  return stored.some(f => f.endsWith('.part') || f.startsWith('upload:'))
}

/**
 * The database and storage of the cache in `dataDir`: the same for every call with that folder
 * (a server restarted on it, the CLI run on it), made on first use.
 */
export async function backendFor (dataDir: string): Promise<CacheBackend> {
  const key = path.resolve(dataDir)
  let backend = made.get(key)
  if (backend === undefined) {
    backend = makeBackend(key)
    made.set(key, backend)
  }
  return await backend
}

/** `overrides` with its data folder's database and storage, for loadConfig (config/config.ts). */
export async function cacheConfig<T extends { dataDir: string }> (overrides: T): Promise<T & { database?: string, storage?: string }> {
  const backend = await backendFor(overrides.dataDir)
  return {
    ...overrides,
    ...(backend.database === null ? {} : { database: backend.database }),
    ...(backend.storage === null ? {} : { storage: backend.storage })
  }
}

/**
 * Test options for a test about SQLite or the data folder themselves: on postgres-s3 it is
 * registered as skipped with `reason`, so the run's summary counts it as skipped, never as passed.
 */
export function sqliteOnly (reason: string): { skip?: string } {
  return ON_POSTGRES_S3 ? { skip: `SQLite + data folder only: ${reason}` } : {}
}
