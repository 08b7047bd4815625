/**
 * Replicas as an operator runs them (test/scale): one fresh PostgreSQL database and S3 bucket on
 * the shared engines, and `narwhal serve` processes on it, each with a data folder of its own.
 */
import path from 'node:path'
import type { TestContext } from 'node:test'
import { tempDir } from './nix.js'
import { createDatabase, postgresEngine, type TestDatabase } from './postgres.js'
import { awsEnv, createBucket, s3Engine, storageUrl, type S3Engine } from './s3.js'
import { spawnServer, type ServerProcess } from './server-process.js'

export interface SharedCache {
  engine: S3Engine
  db: TestDatabase
  bucket: string
  storage: string
  /** The S3 user's keys only. */
  aws: Record<string, string>
  /** What a replica or a cache command on the shared cache is given: the keys, NARWHAL_DATABASE_URL and NARWHAL_STORAGE_URL. */
  env: Record<string, string>
}

/** A fresh database (dropped after the test) and bucket. */
export async function sharedCache (t: TestContext): Promise<SharedCache> {
  const engine = s3Engine()
  const db = await createDatabase(postgresEngine())
  t.after(db.drop)
  const bucket = await createBucket(engine)
  const storage = storageUrl(engine, bucket)
  const aws = Object.fromEntries(Object.entries(awsEnv(engine)).filter(([k]) => k.startsWith('AWS_'))) as Record<string, string>
  return { engine, db, bucket, storage, aws, env: { ...aws, NARWHAL_DATABASE_URL: db.url, NARWHAL_STORAGE_URL: storage } }
}

/** `narwhal serve` on a scratch data folder with `env` (sharedCache's, plus any setting); stopped after the test. */
export async function spawnReplica (t: TestContext, name: string, trustedKeys: string[], env: Record<string, string>): Promise<ServerProcess> {
  const server = await spawnServer({
    dataDir: tempDir(`narwhal-replica-${name}-`), logFile: path.join(tempDir('narwhal-replica-log-'), `${name}.log`), trustedKeys, env
  })
  t.after(async () => { await server.stop() })
  return server
}

export function hashPart (storePath: string): string {
  return path.basename(storePath).slice(0, 32)
}

/** The status of a request, its body read and dropped. */
export async function statusOf (url: string, init?: RequestInit): Promise<number> {
  const response = await fetch(url, init)
  await response.arrayBuffer()
  return response.status
}
