/**
 * `npm run bench:replicas`: narwhal as several machines run it (issue 20), side by side in one run.
 *
 *   substitution   `nix copy --from URL --to <empty store>` of a closure pushed through replica A:
 *                  from nginx serving the files `nix copy --to file://…` wrote, from replica B
 *                  (NARs streamed from the bucket), from replica C (storage.redirectNars: NARs
 *                  answered with a redirect to a presigned bucket URL), and from nginx
 *                  load-balancing B and D (both streaming; the README's upstream block)
 *   upload         `nix copy --to` a fresh narwhal: the embedded default (SQLite + data folder)
 *                  against a replica on a fresh PostgreSQL database and a fresh bucket
 *
 * Every replica has its own data folder; they share one PostgreSQL and one Ceph RGW bucket, both
 * started here as test/run.sh starts them (scripts/test-engines/*.sh) and stopped at the end.
 * Rounds alternate the contenders; medians. Host Nix (2.8) only. BENCH_CLOSURE_MB (default 150)
 * sizes the closure (bench/closure.ts); BENCH_ROUNDS (default 3) the rounds. Appends the table to
 * BENCHMARKS.md unless BENCH_QUICK=1.
 */
import type { ChildProcess } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { buildBenchClosure } from './closure.js'
import { startNarwhal, startNginx, startNginxBalancer } from './servers.js'
import { alternate, freePort, nixEnv, sh, startProcess, timed, useScratchTmpdir, writeNetrc } from './tools.js'
import { createBucket, createDatabase, postgresEngine, s3Engine, storageUrl, type TestDatabase } from '../scripts/test-engines/engines.js'

const QUICK = process.env.BENCH_QUICK === '1'
const ROUNDS = QUICK ? 1 : Number(process.env.BENCH_ROUNDS ?? 3)
const CLOSURE_MB = Number(process.env.BENCH_CLOSURE_MB ?? 150)
const CLI = path.resolve('dist/src/cli/main.js')

/** Reads the `export K=V` lines an engine script writes to DIR/env into process.env. */
function loadEnvFile (file: string): void {
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    const m = /^export ([A-Z0-9_]+)=(.*)$/.exec(line.trim())
    if (m?.[1] !== undefined && m[2] !== undefined) process.env[m[1]] = m[2].replace(/^'(.*)'$/, '$1')
  }
}

/** Prints each round's figure (stderr), so the spread behind a median can be seen. */
function logged (label: string, fn: () => Promise<number>): () => Promise<number> {
  return async () => {
    const seconds = await fn()
    console.error(`${label}: ${seconds.toFixed(2)} s`)
    return seconds
  }
}

interface Replica { url: string, child: ChildProcess }

async function startReplica (env: NodeJS.ProcessEnv, publicKey: string): Promise<Replica> {
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'narwhal-bench-replica-'))
  const port = await freePort()
  const url = `http://127.0.0.1:${port}`
  const child = await startProcess('node', [CLI, 'serve', '--data', dataDir, '--listen', `127.0.0.1:${port}`, '--trusted-key', publicKey],
    env, async () => (await fetch(`${url}/nix-cache-info`)).ok)
  return { url, child }
}

async function main (): Promise<void> {
  useScratchTmpdir('narwhal-bench-replicas')
  // Short paths straight under /tmp, as test/run.sh makes them: their sockets live in them, and
  // the postgres user must reach its folder (the scratch folder is private).
  const pgDir = mkdtempSync('/tmp/narwhal-pg-')
  const cephDir = mkdtempSync('/tmp/narwhal-ceph-')
  console.error('starting PostgreSQL and Ceph RGW…')
  await Promise.all([sh('scripts/test-engines/postgres.sh', ['start', pgDir]), sh('scripts/test-engines/ceph.sh', ['start', cephDir])])
  const children: ChildProcess[] = []
  const databases: TestDatabase[] = []
  try {
    loadEnvFile(path.join(pgDir, 'env'))
    loadEnvFile(path.join(cephDir, 'env'))
    const pg = postgresEngine()
    const s3 = s3Engine()
    // The replicas' environment: the S3 user's keys, nothing else of AWS or narwhal from ours.
    const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('AWS_') && !k.startsWith('NARWHAL_')))
    const replicaEnv = async (): Promise<NodeJS.ProcessEnv> => {
      const db = await createDatabase(pg)
      databases.push(db)
      return { ...base, AWS_ACCESS_KEY_ID: s3.accessKey, AWS_SECRET_ACCESS_KEY: s3.secretKey, NARWHAL_DATABASE_URL: db.url, NARWHAL_STORAGE_URL: storageUrl(s3, await createBucket(s3, 'narwhal-bench')) }
    }
    const keyDir = mkdtempSync(path.join(os.tmpdir(), 'narwhal-bench-key-'))
    const secretKey = path.join(keyDir, 'secret')
    const publicKey = (await sh('node', [CLI, 'keygen', `bench-replicas-${path.basename(keyDir).slice(-6)}-1`, '--secret-out', secretKey, '--public-out', path.join(keyDir, 'public')])).trim()
    const tokenFor = async (env: NodeJS.ProcessEnv): Promise<string> =>
      (await sh('node', [CLI, 'token', 'create', '--scope', 'push', '--data', mkdtempSync(path.join(os.tmpdir(), 'narwhal-bench-cli-'))], env)).trim()

    const env = nixEnv()
    console.error('building the closure…')
    const closure = await buildBenchClosure(env, CLOSURE_MB * 1024 * 1024)
    console.error(`closure: ${closure.paths.length} paths, ${(closure.narBytes / 1e6).toFixed(0)} MB of NAR`)

    // Substitution: push through A, substitute from nginx, B (streamed) and C (redirected).
    const shared = await replicaEnv()
    const token = await tokenFor(shared)
    const a = await startReplica(shared, publicKey)
    const b = await startReplica(shared, publicKey)
    const c = await startReplica({ ...shared, NARWHAL_STORAGE_REDIRECT_NARS: 'true' }, publicKey)
    const d = await startReplica(shared, publicKey)
    const nginx = await startNginx()
    const balancer = await startNginxBalancer([b.url, d.url])
    children.push(a.child, b.child, c.child, d.child, nginx.child, balancer.child)
    await sh('nix', ['copy', '--to', `${a.url}?secret-key=${secretKey}&compression=zstd`, closure.top], nixEnv([`netrc-file = ${writeNetrc(token)}`]))
    await sh('nix', ['copy', '--to', `file://${nginx.staticRoot}?secret-key=${secretKey}&compression=zstd`, closure.top], env)
    const substitute = (url: string) => async (): Promise<number> => {
      const store = mkdtempSync(path.join(os.tmpdir(), 'narwhal-bench-store-'))
      try {
        return await timed(async () => await sh('nix', ['copy', '--from', url, '--to', store, closure.top], nixEnv([`trusted-public-keys = ${publicKey}`])))
      } finally {
        await sh('rm', ['-rf', store])
      }
    }
    console.error('substitution rounds…')
    const [ngSub, streamSub, redirectSub, balancedSub] = await alternate(ROUNDS, [nginx.staticUrl, b.url, c.url, balancer.url].map(substitute)
      .map((fn, i) => logged(`substitution ${['nginx', 'streamed', 'redirected', 'load-balanced'][i] ?? ''}`, fn)))

    // Upload: a fresh server each round, embedded default against a replica on a fresh database and bucket.
    const uploadEmbedded = async (): Promise<number> => {
      const fresh = await startNarwhal(base, {})
      try {
        return await timed(async () => await sh('nix', ['copy', '--to', `${fresh.url}?secret-key=${fresh.secretKey}&compression=zstd`, closure.top],
          nixEnv([`netrc-file = ${writeNetrc(fresh.token)}`])))
      } finally { fresh.child.kill('SIGTERM') }
    }
    const uploadReplica = async (): Promise<number> => {
      const freshEnv = await replicaEnv()
      const freshToken = await tokenFor(freshEnv)
      const replica = await startReplica(freshEnv, publicKey)
      try {
        return await timed(async () => await sh('nix', ['copy', '--to', `${replica.url}?secret-key=${secretKey}&compression=zstd`, closure.top],
          nixEnv([`netrc-file = ${writeNetrc(freshToken)}`])))
      } finally { replica.child.kill('SIGTERM') }
    }
    console.error('upload rounds…')
    const [embeddedUp, replicaUp] = await alternate(ROUNDS, [logged('upload embedded', uploadEmbedded), logged('upload replica', uploadReplica)])

    const f = (n: number | undefined): string => (n ?? NaN).toFixed(2)
    const r = (n: number | undefined, d: number | undefined): string => ((n ?? NaN) / (d ?? NaN)).toFixed(2)
    const cpu = (/model name\s*:\s*(.*)/.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? 'unknown CPU').trim()
    const table = [
      `Measured ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC on ${os.cpus().length} cores (${cpu}), ${(os.totalmem() / 1024 ** 3).toFixed(0)} GiB RAM, ` +
        `Node ${process.version}, Nix 2.8 (host); loopback; machine shared with other work (load average ${os.loadavg()[0]?.toFixed(1)} at the end); ` +
        `closure of ${closure.paths.length} paths, ${(closure.narBytes / 1e6).toFixed(0)} MB of NAR (zstd, BENCH_CLOSURE_MB=${CLOSURE_MB}); medians of ${ROUNDS} rounds, contenders taking turns${QUICK ? ' (BENCH_QUICK)' : ''}. ` +
        'Replicas: `narwhal serve` processes with data folders of their own on one PostgreSQL (fsync off, as the test engine runs it) and one Ceph RGW bucket on one OSD, all on this machine.',
      '',
      '| what | reference (s) | narwhal (s) | ratio |',
      '| --- | ---: | ---: | ---: |',
      `| substitution, nix copy --from into an empty store: nginx static vs replica B streaming (pushed through A) | ${f(ngSub)} | ${f(streamSub)} | ${r(streamSub, ngSub)} |`,
      `| substitution: nginx static vs replica C with storage.redirectNars (307 to presigned RGW URLs) | ${f(ngSub)} | ${f(redirectSub)} | ${r(redirectSub, ngSub)} |`,
      `| substitution: nginx static vs nginx load-balancing replicas B and D (upstream block, as the README's example; streaming) | ${f(ngSub)} | ${f(balancedSub)} | ${r(balancedSub, ngSub)} |`,
      `| upload, nix copy --to a fresh server: embedded default (SQLite + folder) vs a replica on PG + S3 | ${f(embeddedUp)} | ${f(replicaUp)} | ${r(replicaUp, embeddedUp)} |`
    ].join('\n')
    console.log(table)
    if (!QUICK) {
      const file = 'BENCHMARKS.md'
      const text = readFileSync(file, 'utf8')
      const at = text.indexOf('\n## ')
      const section = `\n## Several machines (\`npm run bench:replicas\`, bench/replicas.ts)\n\n${table}\n`
      writeFileSync(file, at < 0 ? text + section : text.slice(0, at) + section + text.slice(at))
    }
  } finally {
    for (const child of children) child.kill('SIGTERM')
    await Promise.all(databases.map(async db => { await db.drop().catch(() => {}) }))
    await sh('scripts/test-engines/ceph.sh', ['stop', cephDir]).catch(() => {})
    await sh('scripts/test-engines/postgres.sh', ['stop', pgDir]).catch(() => {})
    rmSync(pgDir, { recursive: true, force: true })
    rmSync(cephDir, { recursive: true, force: true })
  }
}

main().catch((err: unknown) => {
  console.error(err)
  process.exitCode = 1
})
