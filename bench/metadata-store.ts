/**
 * Metadata store micro-benchmark: what one process's MetadataStore calls cost on SQLite (the data
 * folder's file) and on PostgreSQL, without HTTP, alternating the two in one run.
 *
 *   node dist/bench/metadata-store.js [postgres://USER@HOST:PORT/DB]   (an empty database it may fill)
 *
 *   BENCH_RUNS=3     rounds (medians are printed)
 *   BENCH_PATHS=500  paths per round
 *
 * Rows, per path or lookup: an upload's metadata writes (claim, markLive, narinfo insert); a
 * narinfo GET's body() on a miss of the in-memory cache and on a hit; a token lookup (done at
 * every authenticated request, never cached on PostgreSQL). Prints a table; never asserts on time.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { randomBytes } from 'node:crypto'
import type { MetadataStore } from '../src/db/metadata-store.js'
import { openMetadataStore } from '../src/db/open-metadata-store.js'

const RUNS = Number(process.env.BENCH_RUNS ?? 3)
const PATHS = Number(process.env.BENCH_PATHS ?? 500)
const NIX32 = '0123456789abcdfghijklmnpqrsvwxyz'
const hash = (): string => [...randomBytes(32)].map(b => NIX32[b % 32]).join('')
const PROVENANCE = { acceptedAt: 1, tokenId: null, tokenName: null, keyNames: ['k'], clientAddress: null, upstream: null }

interface Figures { uploadUs: number, missUs: number, hitUs: number, tokenUs: number }

async function round (store: MetadataStore): Promise<Figures> {
  const hashParts: string[] = []
  let t = performance.now()
  for (let i = 0; i < PATHS; i++) {
    const claimed = await store.narFiles.claim({ fileHash: hash() + hash(), fileSize: 1000, compression: 'xz', narHash: 'sha256:' + hash(), narSize: 4000 }, Date.now())
    if (claimed.kind !== 'pending') throw new Error(`claim: ${claimed.kind}`)
    await store.narFiles.markLive(claimed.row.id)
    const hashPart = hash()
    const storePath = `/nix/store/${hashPart}-bench`
    const outcome = await store.narinfos.insert({
      hashPart,
      storePath,
      narFileId: claimed.row.id,
      narHash: claimed.row.narHash,
      narSize: 4000,
      deriver: null,
      ca: null,
      sigs: ['k:AAAA'],
      narinfo: `StorePath: ${storePath}\n`,
      references: []
    }, PROVENANCE, { upstreamReferences: false, now: Date.now() })
    if (outcome.kind !== 'created') throw new Error(`insert: ${outcome.kind}`)
    hashParts.push(hashPart)
  }
  const uploadUs = (performance.now() - t) * 1000 / PATHS
  // Let the other replicas' notifications of these writes arrive (PostgreSQL) before reading.
  await new Promise(resolve => setTimeout(resolve, 300))
  t = performance.now()
  for (const h of hashParts) await store.narinfos.body(h)
  const missUs = (performance.now() - t) * 1000 / PATHS
  t = performance.now()
  for (let k = 0; k < 10; k++) for (const h of hashParts) await store.narinfos.body(h)
  const hitUs = (performance.now() - t) * 1000 / PATHS / 10
  t = performance.now()
  for (const h of hashParts) await store.tokens.byHash(h)
  const tokenUs = (performance.now() - t) * 1000 / PATHS
  return { uploadUs, missUs, hitUs, tokenUs }
}

const median = (values: number[]): number => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] ?? NaN

const postgresUrl = process.argv[2]
const dir = mkdtempSync(path.join(os.tmpdir(), 'narwhal-bench-meta-'))
const backends: Array<{ name: string, store: MetadataStore }> = [
  { name: 'SQLite', store: (await openMetadataStore(undefined, path.join(dir, 'narwhal.db'), { migrate: true })).metadata }
]
if (postgresUrl !== undefined) backends.push({ name: 'PostgreSQL', store: (await openMetadataStore(postgresUrl, '', { migrate: true })).metadata })
const results = new Map<string, Figures[]>(backends.map(b => [b.name, []]))
for (let r = 0; r < RUNS; r++) {
  for (const b of backends) results.get(b.name)?.push(await round(b.store))
}
process.stdout.write(`${PATHS} paths, ${RUNS} rounds alternating, medians (µs)\n`)
process.stdout.write('backend       upload writes/path  narinfo miss  narinfo hit  token lookup\n')
for (const [name, figures] of results) {
  const m = (key: keyof Figures): string => median(figures.map(f => f[key])).toFixed(key === 'hitUs' ? 1 : 0).padStart(12)
  process.stdout.write(`${name.padEnd(12)} ${m('uploadUs')}        ${m('missUs')}  ${m('hitUs')} ${m('tokenUs')}\n`)
}
for (const b of backends) await b.store.close()
rmSync(dir, { recursive: true, force: true })
