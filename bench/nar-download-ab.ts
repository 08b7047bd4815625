/**
 * `node dist/bench/nar-download-ab.js`: NAR downloads from this build against another build of
 * narwhal (BENCH_BASELINE: a checkout with `npx tsc -p tsconfig.json` run), both serving one data
 * folder, rounds alternated, medians. For a change to how NARs are read (the blob store seam of
 * issue 17): the NAR download rows of `npm run bench` (the whole closure by curl, 1 and 16 at a
 * time) plus wrk on a small NAR (the fast path, server/fast-reads.ts) and on one of about 1 MiB
 * (the route and the event-loop read loop).
 *
 *   BENCH_BASELINE (required)  BENCH_CLOSURE_MB (300)  BENCH_RUNS (5)
 */
import { mkdtempSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { buildBenchClosure } from './closure.js'
import { startNarwhal, type Narwhal } from './servers.js'
import { alternate, nixEnv, sh, timed, useScratchTmpdir, writeNetrc, wrkRate } from './tools.js'

const RUNS = Number(process.env.BENCH_RUNS ?? 5)
const CLOSURE_MB = Number(process.env.BENCH_CLOSURE_MB ?? 300)

async function downloadAll (urls: string[], bytes: number, parallel: number): Promise<number> {
  const config = path.join(mkdtempSync(path.join(os.tmpdir(), 'narwhal-bench-curl-')), 'urls')
  writeFileSync(config, urls.map(u => `url = "${u}"\noutput = "/dev/null"\n`).join(''))
  const seconds = await timed(async () => await sh('curl', ['-s', '-f', '-Z', '--parallel-max', String(parallel), '-K', config]))
  return bytes / 1e6 / seconds
}

interface Nar { url: string, size: number }

async function narsOf (base: string, paths: string[]): Promise<Nar[]> {
  const nars: Nar[] = []
  for (const p of paths) {
    const text = await (await fetch(`${base}/${path.basename(p).slice(0, 32)}.narinfo`)).text()
    const url = /^URL: (.*)$/m.exec(text)?.[1]
    const size = /^FileSize: (\d+)$/m.exec(text)?.[1]
    if (url === undefined || size === undefined) throw new Error(`no URL in narinfo of ${p} at ${base}`)
    nars.push({ url, size: Number(size) })
  }
  return nars
}

async function main (): Promise<void> {
  const baseline = process.env.BENCH_BASELINE
  if (baseline === undefined || baseline === '') throw new Error('set BENCH_BASELINE to a checkout of the other build (with npx tsc run)')
  useScratchTmpdir('narwhal-bench-ab')
  const env = nixEnv()
  const closure = await buildBenchClosure(env, CLOSURE_MB * 1024 * 1024)
  const ours = await startNarwhal(process.env, { NARWHAL_LOG_LEVEL: 'warn' })
  let theirs: Narwhal | undefined
  try {
    await sh('nix', ['copy', '--to', `${ours.url}?secret-key=${ours.secretKey}&compression=zstd`, closure.top],
      nixEnv([`netrc-file = ${writeNetrc(ours.token)}`]))
    // The baseline build serves the same data folder (SQLite's WAL lets both read it).
    theirs = await startNarwhal(process.env, { NARWHAL_LOG_LEVEL: 'warn' }, undefined, ours, path.join(baseline, 'dist/src/cli/main.js'))
    const nars = await narsOf(ours.url, closure.paths)
    const bytes = nars.reduce((sum, n) => sum + n.size, 0)
    const small = nars.filter(n => n.size <= 64 * 1024).sort((a, b) => b.size - a.size)[0]
    const medium = nars.filter(n => n.size >= 512 * 1024 && n.size <= 4 * 1024 * 1024).sort((a, b) => a.size - b.size)[0]
    if (small === undefined || medium === undefined) throw new Error('the closure has no NAR of ≤ 64 KiB or of 0.5-4 MiB')
    const servers = [theirs, ours]
    const rows: string[] = []
    const row = (what: string, unit: string, [base, now]: number[]): void => {
      rows.push(`| ${what} | ${(base ?? NaN).toFixed(0)} | ${(now ?? NaN).toFixed(0)} | ${((now ?? NaN) / (base ?? NaN)).toFixed(3)} | ${unit} |`)
      console.error(rows[rows.length - 1])
    }
    for (const parallel of [1, 16]) {
      row(`whole closure (${nars.length} NARs, ${(bytes / 1e6).toFixed(0)} MB), curl, ${parallel} at a time`, 'MB/s',
        await alternate(RUNS, servers.map(s => async () => await downloadAll(nars.map(n => `${s.url}/${n.url}`), bytes, parallel))))
    }
    for (const [label, nar] of [['small NAR', small], ['medium NAR', medium]] as const) {
      for (const c of [1, 16]) {
        row(`${label} (${nar.size} bytes), wrk, ${c} connection${c > 1 ? 's' : ''}`, 'req/s',
          await alternate(RUNS, servers.map(s => async () => await wrkRate(`${s.url}/${nar.url}`, c, 5))))
      }
    }
    console.log(`NAR downloads, ${new Date().toISOString()}, ${os.cpus().length} cores, load average ${os.loadavg()[0]?.toFixed(1)} at the end; medians of ${RUNS} alternated rounds\n`)
    console.log('| what | baseline | this build | ratio | unit |\n| --- | ---: | ---: | ---: | --- |')
    console.log(rows.join('\n'))
  } finally {
    theirs?.child.kill()
    ours.child.kill()
  }
}

await main()
