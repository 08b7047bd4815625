/**
 * `node dist/bench/nar-download-ab.js`: NAR downloads from this build against another build of
 * narwhal (BENCH_BASELINE: a checkout with `npx tsc -p tsconfig.json` run), both serving one data
 * folder, rounds alternated, medians. For a change to how NARs are read (the blob store seam of
 * issue 17): the NAR download rows of `npm run bench` (the whole closure by curl, 1 and 16 at a
 * time) plus wrk on a small NAR (the fast path, server/fast-reads.ts) and on one of about 1 MiB
 * (the route and the event-loop read loop). Beside each rate, the server's CPU time per request
 * (per MB for the closure) from /proc: on a loaded, shared machine the rates move with the
 * neighbours' load, the CPU a request costs much less.
 *
 *   BENCH_BASELINE (required)  BENCH_CLOSURE_MB (300)  BENCH_RUNS (5)
 */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { buildBenchClosure } from './closure.js'
import { startNarwhal, type Narwhal } from './servers.js'
import { median, nixEnv, sh, timed, useScratchTmpdir, writeNetrc } from './tools.js'

const RUNS = Number(process.env.BENCH_RUNS ?? 5)
const CLOSURE_MB = Number(process.env.BENCH_CLOSURE_MB ?? 300)

async function downloadAll (urls: string[], bytes: number, parallel: number): Promise<number> {
  const config = path.join(mkdtempSync(path.join(os.tmpdir(), 'narwhal-bench-curl-')), 'urls')
  writeFileSync(config, urls.map(u => `url = "${u}"\noutput = "/dev/null"\n`).join(''))
  const seconds = await timed(async () => await sh('curl', ['-s', '-f', '-Z', '--parallel-max', String(parallel), '-K', config]))
  return bytes / 1e6 / seconds
}

interface Nar { url: string, size: number }

/** utime + stime of one process, in seconds (CLK_TCK is 100 on Linux). */
function cpuSeconds (pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /s, '').split(' ')
  return (Number(fields[11]) + Number(fields[12])) / 100
}

/** wrk for `seconds`: requests a second and how many requests were made. */
async function wrk (url: string, connections: number, seconds: number): Promise<{ rate: number, requests: number }> {
  const out = await sh('wrk', [`-t${Math.min(2, connections)}`, `-c${connections}`, `-d${seconds}s`, url])
  const rate = /Requests\/sec:\s+([\d.]+)/.exec(out)?.[1]
  const requests = /(\d+) requests in/.exec(out)?.[1]
  if (rate === undefined || requests === undefined || /Non-2xx/.test(out)) throw new Error(`wrk on ${url}:\n${out}`)
  return { rate: Number(rate), requests: Number(requests) }
}

/** A rate and the server's CPU per unit of work. */
interface Sample { rate: number, cpu: number }

/** Each measurement `RUNS` times, taking turns; medians of both figures. */
async function alternated (fns: Array<() => Promise<Sample>>): Promise<Sample[]> {
  const samples: Sample[][] = fns.map(() => [])
  for (let i = 0; i < RUNS; i++) for (const [j, fn] of fns.entries()) samples[j]?.push(await fn())
  return samples.map(list => ({ rate: median(list.map(x => x.rate)), cpu: median(list.map(x => x.cpu)) }))
}

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
    const row = (what: string, unit: string, cpuUnit: string, [base, now]: Sample[]): void => {
      const b = base ?? { rate: NaN, cpu: NaN }
      const n = now ?? { rate: NaN, cpu: NaN }
      rows.push(`| ${what} | ${b.rate.toFixed(0)} | ${n.rate.toFixed(0)} | ${(n.rate / b.rate).toFixed(3)} | ${unit} | ` +
        `${b.cpu.toFixed(1)} | ${n.cpu.toFixed(1)} | ${(n.cpu / b.cpu).toFixed(3)} | ${cpuUnit} |`)
      console.error(rows[rows.length - 1])
    }
    const pidOf = (server: Narwhal): number => server.child.pid ?? 0
    for (const parallel of [1, 16]) {
      row(`whole closure (${nars.length} NARs, ${(bytes / 1e6).toFixed(0)} MB), curl, ${parallel} at a time`, 'MB/s', 'CPU ms/MB',
        await alternated(servers.map(server => async () => {
          const before = cpuSeconds(pidOf(server))
          const rate = await downloadAll(nars.map(n => `${server.url}/${n.url}`), bytes, parallel)
          return { rate, cpu: (cpuSeconds(pidOf(server)) - before) * 1000 / (bytes / 1e6) }
        })))
    }
    for (const [label, nar] of [['small NAR', small], ['medium NAR', medium]] as const) {
      for (const c of [1, 16]) {
        row(`${label} (${nar.size} bytes), wrk, ${c} connection${c > 1 ? 's' : ''}`, 'req/s', 'CPU µs/request',
          await alternated(servers.map(server => async () => {
            const before = cpuSeconds(pidOf(server))
            const { rate, requests } = await wrk(`${server.url}/${nar.url}`, c, 5)
            return { rate, cpu: (cpuSeconds(pidOf(server)) - before) * 1e6 / requests }
          })))
      }
    }
    console.log(`NAR downloads, ${new Date().toISOString()}, ${os.cpus().length} cores, load average ${os.loadavg()[0]?.toFixed(1)} at the end; medians of ${RUNS} alternated rounds\n`)
    console.log('| what | baseline | this build | ratio | unit | baseline CPU | this build CPU | ratio | unit |\n| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | --- |')
    console.log(rows.join('\n'))
  } finally {
    theirs?.child.kill()
    ours.child.kill()
  }
}

await main()
