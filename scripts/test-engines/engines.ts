/**
 * The engines scripts/test-engines/postgres.sh and ceph.sh start, as the tests (test/helpers/
 * postgres.ts, s3.ts) and the benchmarks (bench/replicas.ts) both use them: where they are (the
 * NARWHAL_TEST_* variables those scripts' `env` files set) and a fresh database or bucket on them.
 * Next to the scripts rather than in test/ or bench/, so that neither tree depends on the other.
 */
import { randomBytes } from 'node:crypto'
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3'
import pg from 'pg'

export interface PostgresEngine {
  /** postgres://postgres@127.0.0.1:PORT/narwhal_test: a superuser, trust authentication. */
  url: string
  dir: string
}

export function postgresEngine (): PostgresEngine {
  const url = process.env.NARWHAL_TEST_DATABASE_URL
  const dir = process.env.NARWHAL_TEST_POSTGRES_DIR
  if (url === undefined || dir === undefined) {
    throw new Error('the PostgreSQL tests need a running PostgreSQL: run them through test/run.sh, or start one with ' +
      '`scripts/test-engines/postgres.sh start DIR` and `source DIR/env` first')
  }
  return { url, dir }
}

/** Runs `sql` as the superuser on the engine's own database. */
export async function adminQuery (engine: PostgresEngine, sql: string): Promise<pg.QueryResult> {
  const client = new pg.Client({ connectionString: engine.url })
  await client.connect()
  try {
    return await client.query(sql)
  } finally {
    await client.end()
  }
}

export interface TestDatabase {
  /** postgres://…/narwhal_t_<random>: empty, no narwhal schema yet. */
  url: string
  name: string
  drop: () => Promise<void>
}

/** A new empty database; `drop` ends its sessions and removes it. */
export async function createDatabase (engine: PostgresEngine): Promise<TestDatabase> {
  const name = `narwhal_t_${randomBytes(6).toString('hex')}`
  await adminQuery(engine, `CREATE DATABASE ${name}`)
  const url = new URL(engine.url)
  url.pathname = '/' + name
  return {
    url: url.href,
    name,
    drop: async () => { await adminQuery(engine, `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`) }
  }
}

export interface S3Engine {
  /** http://127.0.0.1:PORT */
  endpoint: string
  accessKey: string
  secretKey: string
}

export function s3Engine (): S3Engine {
  const endpoint = process.env.NARWHAL_TEST_S3_ENDPOINT
  const accessKey = process.env.NARWHAL_TEST_S3_ACCESS_KEY
  const secretKey = process.env.NARWHAL_TEST_S3_SECRET_KEY
  if (endpoint === undefined || accessKey === undefined || secretKey === undefined) {
    throw new Error('the S3 tests need a running S3 engine: run them through test/run.sh, or start one with ' +
      '`scripts/test-engines/ceph.sh start DIR` and `source DIR/env` first')
  }
  return { endpoint, accessKey, secretKey }
}

export function s3Client (engine: S3Engine): S3Client {
  return new S3Client({
    region: 'us-east-1',
    endpoint: engine.endpoint,
    forcePathStyle: true,
    credentials: { accessKeyId: engine.accessKey, secretAccessKey: engine.secretKey },
    requestChecksumCalculation: 'WHEN_REQUIRED'
  })
}

/** A new empty bucket with a unique name. */
export async function createBucket (engine: S3Engine, label = 'narwhal-test'): Promise<string> {
  const bucket = `${label}-${randomBytes(6).toString('hex')}`
  const client = s3Client(engine)
  try {
    await client.send(new CreateBucketCommand({ Bucket: bucket }))
  } finally { client.destroy() }
  return bucket
}

/** The storage URL of a bucket on the engine, as `narwhal serve|export --storage` takes it. */
export function storageUrl (engine: S3Engine, bucket: string, extra = ''): string {
  return `s3://${bucket}?endpoint=${engine.endpoint.replace(/^http:\/\//, '')}&scheme=http&region=us-east-1${extra}`
}
