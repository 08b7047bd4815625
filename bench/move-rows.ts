/**
 * How long `narwhal export --database` takes for the rows (cache/move-cache.ts): a SQLite cache of
 * BENCH_PATHS narinfos (each referencing the three before it, ~1.2 KB of text, with provenance and
 * two audit entries each; as many upstream records, and a pin and a small build log for every tenth
 * path) moved into a fresh PostgreSQL database, for a few batch sizes, then run again (the no-op a
 * resumed or repeated move costs). The steps' own times are printed too. CPU is this process's (the CLI's); PostgreSQL's is not in it. Objects are not part of it (export-to-bucket's
 * own figures are the bucket's).
 *
 *   node dist/bench/move-rows.js postgres://SUPERUSER@HOST:PORT/DB   (it creates and drops its own databases)
 *
 *   BENCH_PATHS=5000  BENCH_BATCHES=200,1000
 */
import { mkdtempSync, rmSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { randomBytes } from 'node:crypto'
import pg from 'pg'
import { beginMove, moveRows } from '../src/cache/move-cache.js'
import { parseDatabaseUrl, type PostgresLocation } from '../src/db/database-url.js'
import { PgMetadataStore } from '../src/db/postgres/store.js'
import { openSqliteMetadataStore } from '../src/db/sqlite/store.js'

const PATHS = Number(process.env.BENCH_PATHS ?? 5000)
const BATCHES = (process.env.BENCH_BATCHES ?? '200,1000').split(',').map(Number)
const NIX32 = '0123456789abcdfghijklmnpqrsvwxyz'
const hash = (): string => [...randomBytes(32)].map(b => NIX32[b % 32]).join('')

async function main (): Promise<void> {
  const admin = process.argv[2]
  if (admin === undefined) throw new Error('usage: node dist/bench/move-rows.js postgres://SUPERUSER@HOST:PORT/DB')
  const dir = mkdtempSync(path.join(os.tmpdir(), 'narwhal-bench-move-'))
  const source = openSqliteMetadataStore(path.join(dir, 'narwhal.sqlite'))
  const token = await source.tokens.insert({ name: 'ci', scope: 'push', tokenHash: hash(), expiresAt: null }, 1)
  const paths: Array<{ hashPart: string, baseName: string }> = []
  let t = performance.now()
  for (let i = 0; i < PATHS; i++) {
    const claimed = await source.narFiles.claim({ fileHash: hash() + hash(), fileSize: 100_000, compression: 'xz', narHash: 'sha256:' + hash(), narSize: 400_000 }, 1)
    if (claimed.kind !== 'pending') throw new Error(claimed.kind)
    await source.narFiles.markLive(claimed.row.id)
    const hashPart = hash()
    const baseName = `${hashPart}-bench-package-${i}`
    const references = paths.slice(-3)
    const narinfo = `StorePath: /nix/store/${baseName}\n${'X'.repeat(1000)}\n`
    const outcome = await source.narinfos.insert({
      hashPart,
      storePath: `/nix/store/${baseName}`,
      narFileId: claimed.row.id,
      narHash: claimed.row.narHash,
      narSize: 400_000,
      deriver: null,
      ca: null,
      sigs: ['k:' + 'A'.repeat(88)],
      narinfo,
      references
    }, { acceptedAt: i, tokenId: token, tokenName: 'ci', keyNames: ['k'], clientAddress: '10.0.0.1', upstream: null }, { upstreamReferences: false, now: i })
    if (outcome.kind !== 'created') throw new Error(outcome.kind)
    paths.push({ hashPart, baseName })
  }
  await source.audit.append(paths.flatMap((p, i) => [0, 1].map(k => ({
    at: i,
    tokenId: token,
    tokenName: 'ci',
    clientAddress: '10.0.0.1',
    method: 'PUT',
    subject: `/nix/store/${p.baseName}`,
    hashPart: k === 0 ? p.hashPart : null,
    fileHash: null,
    outcome: 'created',
    status: 204,
    code: null,
    reason: null
  }))), PATHS * 2)
  for (let i = 0; i < PATHS; i++) {
    const hashPart = hash()
    await source.upstreamRecords.insert({
      hashPart,
      storePath: `/nix/store/${hashPart}-pulled-${i}`,
      upstream: 'https://cache.example',
      narUrl: `nar/${hash()}${hash()}.nar.xz`,
      fileHash: hash() + hash(),
      fileSize: 100_000,
      compression: 'xz',
      narHash: 'sha256:' + hash(),
      narSize: 400_000,
      references: [],
      narinfo: `StorePath: /nix/store/${hashPart}-pulled-${i}\n${'X'.repeat(600)}\n`,
      createdAt: i
    })
  }
  for (const [i, p] of paths.entries()) {
    if (i % 10 !== 0) continue
    await source.retention.addPin({ hashPart: p.hashPart, storePath: `/nix/store/${p.baseName}`, keepUntil: null, note: 'bench' }, i)
    await source.aux.put('log', `${p.baseName}.drv`, { contentType: 'text/plain; charset=utf-8', contentEncoding: null, body: randomBytes(2000) }, i)
  }
  process.stdout.write(`source: ${PATHS} narinfos made in ${((performance.now() - t) / 1000).toFixed(1)} s\n`)

  process.stdout.write('| batch | first run s | µs per narinfo | narwhal CPU µs per narinfo | second run (no-op) s | first run\'s steps s |\n|---|---|---|---|---|---|\n')
  for (const batch of BATCHES) {
    const name = `narwhal_bench_move_${randomBytes(4).toString('hex')}`
    const client = new pg.Client({ connectionString: admin })
    await client.connect()
    await client.query(`CREATE DATABASE ${name}`)
    const url = new URL(admin)
    url.pathname = '/' + name
    const target = await PgMetadataStore.open(parseDatabaseUrl(url.href) as PostgresLocation, { migrate: true })
    try {
      const { move } = await beginMove(target, `sqlite:${dir}`, { merge: false, now: Date.now() })
      t = performance.now()
      const cpu = process.cpuUsage()
      const steps: Array<[string, number]> = []
      const first = await moveRows(source, target, move, { batch, onStep: (step) => { steps.push([step, performance.now()]) } })
      const ended = performance.now()
      const stepTimes = steps.map(([step, at], i) => `${step} ${(((steps[i + 1]?.[1] ?? ended) - at) / 1000).toFixed(2)}`).join(', ')
      const firstS = (performance.now() - t) / 1000
      const used = process.cpuUsage(cpu)
      const cpuUs = (used.user + used.system) / PATHS
      if (first.narinfos.created !== PATHS) throw new Error(`moved ${first.narinfos.created}`)
      t = performance.now()
      await moveRows(source, target, move, { batch })
      const secondS = (performance.now() - t) / 1000
      process.stdout.write(`| ${batch} | ${firstS.toFixed(2)} | ${(firstS * 1e6 / PATHS).toFixed(0)} | ${cpuUs.toFixed(0)} | ${secondS.toFixed(2)} | ${stepTimes} |\n`)
    } finally {
      await target.close()
      await client.query(`DROP DATABASE ${name} WITH (FORCE)`)
      await client.end()
    }
  }
  await source.close()
  rmSync(dir, { recursive: true, force: true })
}

await main()
