/**
 * Engines of a test's own, for tests that stop or restart them: the shared ones (test/run.sh's,
 * or a developer's) serve the other test files meanwhile and must never go away under them.
 *
 * Both live directly under /tmp, as test/run.sh puts its engines: Ceph's admin sockets and
 * PostgreSQL's socket need short paths, and PostgreSQL runs as the postgres user, which must reach
 * its folder (a test's TMPDIR may be private).
 */
import { chmodSync, mkdtempSync, rmSync } from 'node:fs'
import path from 'node:path'
import { run, runOk } from './nix.js'
import type { PostgresEngine } from './postgres.js'
import type { S3Engine } from './s3.js'
import { freePort } from './server-process.js'

const CEPH = path.resolve('scripts/test-engines/ceph.sh')
const POSTGRES = path.resolve('scripts/test-engines/postgres.sh')

/** The exports a start wrote to DIR/env, by name. */
async function exportsOf (dir: string): Promise<Record<string, string>> {
  const out = await runOk('bash', ['-c', `source ${dir}/env && env -0`])
  return Object.fromEntries(out.split('\0').filter(line => line.startsWith('NARWHAL_TEST_')).map(line => {
    const at = line.indexOf('=')
    return [line.slice(0, at), line.slice(at + 1)]
  }))
}

export interface OwnCeph extends S3Engine {
  dir: string
  /** Stops radosgw only (the cluster under it stays up): the S3 service is gone, connections refused. */
  stopRgw: () => Promise<void>
  /** Starts radosgw again, same port and data; resolves once it answers HTTP. */
  startRgw: () => Promise<void>
  /** Stops the whole cluster and removes its folder. */
  stop: () => Promise<void>
}

/** A one-node Ceph cluster with radosgw (scripts/test-engines/ceph.sh): 7-9 s to start, 6 s to stop. */
export async function ownCeph (): Promise<OwnCeph> {
  const parent = mkdtempSync('/tmp/narwhal-ceph-')
  const dir = path.join(parent, 'c')
  try {
    // Ports picked here: two test files starting clusters at once would race for "the first free".
    await runOk(CEPH, ['start', dir], { env: { ...process.env, CEPH_RGW_PORT: String(await freePort()), CEPH_MON_PORT: String(await freePort()) } })
  } catch (err) {
    await run(CEPH, ['stop', dir])
    rmSync(parent, { recursive: true, force: true })
    throw err
  }
  const env = await exportsOf(dir)
  return {
    endpoint: env.NARWHAL_TEST_S3_ENDPOINT ?? '',
    accessKey: env.NARWHAL_TEST_S3_ACCESS_KEY ?? '',
    secretKey: env.NARWHAL_TEST_S3_SECRET_KEY ?? '',
    dir,
    stopRgw: async () => { await runOk(CEPH, ['stop-rgw', dir]) },
    startRgw: async () => { await runOk(CEPH, ['start-rgw', dir]) },
    stop: async () => {
      await run(CEPH, ['stop', dir])
      rmSync(parent, { recursive: true, force: true })
    }
  }
}

export interface OwnPostgres extends PostgresEngine {
  /** Stops the cluster and removes its folder. */
  stop: () => Promise<void>
}

/** A PostgreSQL cluster (scripts/test-engines/postgres.sh), about 2 s to start; restartPostgres works on it. */
export async function ownPostgres (): Promise<OwnPostgres> {
  const parent = mkdtempSync('/tmp/narwhal-pg-')
  chmodSync(parent, 0o755)
  const dir = path.join(parent, 'c')
  await runOk(POSTGRES, ['start', dir], { env: { ...process.env, PG_PORT: String(await freePort()) } })
  const env = await exportsOf(dir)
  return {
    url: env.NARWHAL_TEST_DATABASE_URL ?? '',
    dir,
    stop: async () => {
      await run(POSTGRES, ['stop', dir])
      rmSync(parent, { recursive: true, force: true })
    }
  }
}
