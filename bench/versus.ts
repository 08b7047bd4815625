/**
 * `npm run bench -- --baseline <commit>`: the narwhal rows of `npm run bench`, this build against
 * the build of another commit, side by side in one run. The commit is built once in a git
 * worktree under a cache folder (bench/baseline.ts); the servers under test are each build's own
 * dist/src/cli/main.js, the harness is this one. Each build serves a data folder its own CLI made,
 * filled with the same closure signed by the same key (by a server of that build that stops
 * before the measured ones start), as one process and with BENCH_WORKERS processes; the four
 * take turns in every measurement, so a drift in the machine's load hits all.
 * Beside each figure, the server's CPU time (all its processes, from /proc): on a shared machine
 * the rates move with the neighbours, the CPU a unit of work costs much less.
 *
 *   BENCH_ONLY=narinfo,download,substitution,upload,memory   row groups (all by default)
 *   BENCH_RUNS=3  BENCH_SUBSTITUTION_RUNS=5                    rounds per figure (medians)
 *   BENCH_XZ=1                                                 add the xz upload (1 round, ~9 min per GB per server)
 *   BENCH_QUICK=1                                              smaller closure, one round, nothing written
 *
 * A row the baseline cannot run (a feature it did not have) prints "–" for it and says why.
 */
import { execFileSync } from 'node:child_process'
import { mkdtempSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { prepareBaseline } from './baseline.js'
import { bigNarInfo, bigNarStream } from './big-nar.js'
import { buildBenchClosure } from './closure.js'
import { freshDataDir, startNarwhal, stopNarwhal, type Narwhal } from './servers.js'
import { downloadAll, get, narUrls, put, uploadToFresh } from './transfers.js'
import {
  BENCH_CLIENTS, benchWorkers, cpuSecondsTree, machine, median, nixEnv, peakRssTreeMiB, prepareNix226Root,
  sampledPeakMemoryTreeMiB, sh, timed, TRIXIE_NIX, useScratchTmpdir, writeNetrc, wrkRate, prependToBenchmarks
} from './tools.js'

const QUICK = process.env.BENCH_QUICK === '1'
const RUNS = QUICK ? 1 : Number(process.env.BENCH_RUNS ?? 3)
const SUBSTITUTION_RUNS = QUICK ? 1 : Number(process.env.BENCH_SUBSTITUTION_RUNS ?? 5)
const WRK_SECONDS = QUICK ? 2 : 5
const GROUPS = new Set((process.env.BENCH_ONLY ?? 'narinfo,download,substitution,upload,memory').split(','))

/** One round's figure and the server's CPU seconds per unit of work (NaN where not measured). */
interface Sample { value: number, cpu: number }
const NONE: Sample = { value: NaN, cpu: NaN }

/** One server under test: a build and a process count. */
interface Contender { build: 'baseline' | 'current', workers: number, server: Narwhal, cli: string, failure?: string }

interface Row {
  what: string
  how: string
  unit: string
  better: 'higher' | 'lower'
  cpuUnit: string
  /** Medians per contender, in the order of `contenders`. */
  results: Sample[]
  rounds: number
}

/**
 * Each contender's measurement `times` times, taking turns; medians. A contender that fails
 * (the baseline lacking a feature) is not asked again: NaN, and its failure is kept for the table.
 */
async function rounds (times: number, contenders: Contender[], measure: (c: Contender) => Promise<Sample>): Promise<Sample[]> {
  const samples: Sample[][] = contenders.map(() => [])
  for (let i = 0; i < times; i++) {
    for (const [j, c] of contenders.entries()) {
      if (c.failure !== undefined) continue
      try {
        samples[j]?.push(await measure(c))
      } catch (err) {
        if (c.build === 'current') throw err
        c.failure = (err as Error).message.split('\n')[0]?.slice(0, 200)
        console.error(`baseline failed a row: ${c.failure}`)
      }
    }
  }
  return samples.map(list => list.length === 0 ? NONE : { value: median(list.map(s => s.value)), cpu: median(list.map(s => s.cpu)) })
}

/** The server's CPU seconds spent while `fn` runs, with fn's result. */
async function withCpu<T> (server: Narwhal, fn: () => Promise<T>): Promise<{ result: T, cpu: number }> {
  const pid = server.child.pid ?? 0
  const before = cpuSecondsTree(pid)
  const result = await fn()
  return { result, cpu: cpuSecondsTree(pid) - before }
}

function format (n: number): string {
  if (Number.isNaN(n)) return '–'
  if (n >= 100) return Math.round(n).toLocaleString('en-US')
  return n >= 1 ? n.toFixed(2) : n.toFixed(3)
}

/** "3.1% better" / "4.2% worse", judged by which way the unit is better. */
function change (then: number, now: number, better: 'higher' | 'lower'): string {
  if (Number.isNaN(then) || Number.isNaN(now) || then === 0) return ''
  const gain = better === 'higher' ? now / then - 1 : 1 - now / then
  const text = `${Math.abs(gain * 100).toFixed(1)}% ${gain >= 0 ? 'better' : 'worse'}`
  return gain < -0.05 ? `**${text}**` : text
}

function ratio (then: number, now: number): string {
  return Number.isNaN(then) || Number.isNaN(now) || then === 0 ? '' : (now / then).toFixed(2)
}

export async function runVersus (rev: string): Promise<void> {
  const baseline = prepareBaseline(rev)
  const subject = execFileSync('git', ['log', '-1', '--format=%h %s', baseline.commit], { encoding: 'utf8' }).trim()
  const head = execFileSync('git', ['log', '-1', '--format=%h', 'HEAD'], { encoding: 'utf8' }).trim()
  const dirty = execFileSync('git', ['status', '--porcelain', '--untracked-files=no'], { encoding: 'utf8' }).trim() !== ''
  useScratchTmpdir('narwhal-bench')
  await prepareNix226Root()
  const loadAtStart = os.loadavg()[0] ?? NaN
  const started = new Date()
  const workers = benchWorkers()
  const env = nixEnv()
  console.error('building the closure…')
  const closure = await buildBenchClosure(env, QUICK ? 150 * 1024 * 1024 : 900 * 1024 * 1024)
  console.error(`closure: ${closure.paths.length} paths, ${(closure.narBytes / 1e6).toFixed(0)} MB of NAR; baseline ${subject}`)

  const currentCli = path.resolve('dist/src/cli/main.js')
  const currentData = await freshDataDir(currentCli)
  // The same key for both data folders: the same narinfos, and one key for clients to trust.
  const baselineData = await freshDataDir(baseline.cli, currentData)
  // Each build fills its own data folder through a server of its own that then stops: the servers
  // measured below all start on a filled folder with the same history (none): a server measured
  // right after taking the closure answered narinfos slower than its twin filled a minute
  // earlier, with identical code (BENCHMARKS.md, the one-process narinfo "regression").
  for (const [cli, data] of [[baseline.cli, baselineData], [currentCli, currentData]] as const) {
    const filler = await startNarwhal(process.env, { NARWHAL_WORKERS: '1', NARWHAL_LOG_LEVEL: 'warn' }, undefined, data, cli)
    try {
      await sh('nix', ['copy', '--to', `${filler.url}?secret-key=${filler.secretKey}&compression=zstd`, closure.top], nixEnv([`netrc-file = ${writeNetrc(filler.token)}`]))
    } finally {
      await stopNarwhal(filler)
    }
  }
  const contenders: Contender[] = []
  const rows: Row[] = []
  try {
    for (const n of [1, workers]) {
      for (const [build, cli, data] of [['baseline', baseline.cli, baselineData], ['current', currentCli, currentData]] as const) {
        const server = await startNarwhal(process.env, { NARWHAL_WORKERS: String(n), NARWHAL_LOG_LEVEL: 'warn' }, undefined, data, cli)
        contenders.push({ build, workers: n, server, cli })
      }
    }
    const [currentOne] = contenders.filter(c => c.build === 'current')
    if (currentOne === undefined) throw new Error('no servers')
    const trust = [`trusted-public-keys = ${currentData.publicKey}`]

    if (GROUPS.has('narinfo')) {
      const hashPart = path.basename(closure.top).slice(0, 32)
      for (const [label, suffix] of [['narinfo hits', `/${hashPart}.narinfo`], ['narinfo misses (404)', '/00000000000000000000000000000000.narinfo']] as const) {
        for (const connections of [1, 16, 64]) {
          const results = await rounds(RUNS, contenders, async c => {
            const { result: rate, cpu } = await withCpu(c.server, async () => await wrkRate(c.server.url + suffix, connections, WRK_SECONDS))
            return { value: rate, cpu: cpu / (rate * WRK_SECONDS) * 1e6 }
          })
          rows.push({ what: label, how: `wrk, ${connections} connection${connections > 1 ? 's' : ''}`, unit: 'req/s', better: 'higher', cpuUnit: 'µs/request', results, rounds: RUNS })
        }
      }
    }

    if (GROUPS.has('download')) {
      const nars = new Map<Contender, { urls: string[], bytes: number }>()
      for (const c of contenders) nars.set(c, await narUrls(c.server.url, closure.paths))
      for (const parallel of [1, 16]) {
        const results = await rounds(RUNS, contenders, async c => {
          const n = nars.get(c) ?? { urls: [], bytes: 0 }
          const { result: rate, cpu } = await withCpu(c.server, async () => await downloadAll(n.urls, n.bytes, parallel))
          return { value: rate, cpu }
        })
        rows.push({ what: 'NAR download', how: `whole closure, curl, ${parallel} at a time`, unit: 'MB/s', better: 'higher', cpuUnit: 'CPU s/round', results, rounds: RUNS })
      }
    }

    if (GROUPS.has('substitution')) {
      // The closure into the Nix 2.26 root's own store (a no-op the next time).
      await TRIXIE_NIX.nix(['copy', '--from', currentOne.server.url, closure.top], nixEnv(trust))
      for (const client of BENCH_CLIENTS) {
        const results = await rounds(SUBSTITUTION_RUNS, contenders, async c => {
          const store = mkdtempSync(path.join(os.tmpdir(), 'narwhal-bench-store-'))
          const { result: seconds, cpu } = await withCpu(c.server, async () =>
            await timed(async () => await client.nix(['copy', '--from', c.server.url, '--to', store, closure.top], nixEnv(trust))))
          await sh('rm', ['-rf', store])
          return { value: seconds, cpu }
        })
        rows.push({ what: 'substitution', how: `${client.label}: nix copy --from into an empty store`, unit: 's', better: 'lower', cpuUnit: 'CPU s/round', results, rounds: SUBSTITUTION_RUNS })
      }
    }

    if (GROUPS.has('upload')) {
      for (const compression of process.env.BENCH_XZ === '1' && !QUICK ? ['zstd', 'xz'] : ['zstd']) {
        const runs = compression === 'xz' ? 1 : RUNS
        for (const client of BENCH_CLIENTS) {
          const results = await rounds(runs, contenders, async c => {
            let cpu = NaN
            // A fresh server of the contender's build and process count; its CPU includes its start.
            const seconds = await uploadToFresh(client, c.workers, closure.top, compression,
              { cli: c.cli, key: currentData, onDone: pid => { cpu = cpuSecondsTree(pid) } })
            return { value: seconds, cpu }
          })
          rows.push({ what: 'upload', how: `${client.label}: nix copy --to a fresh server, ${compression}`, unit: 's', better: 'lower', cpuUnit: 'CPU s/round', results, rounds: runs })
        }
      }
    }

    if (GROUPS.has('memory') && !QUICK) {
      const size = 4 * 1024 ** 3 + 300 * 1024 ** 2
      console.error('memory: two 4.3 GiB NARs through each narwhal…')
      const transfer: Sample[] = []
      const pss: Sample[] = []
      for (const [i, c] of contenders.entries()) {
        // Fresh NAR names per server (each data folder has two servers); removed after, for the disk.
        const a = bigNarInfo(size, 2 * i)
        const b = bigNarInfo(size, 2 * i + 1)
        try {
          const status = await put(`${c.server.url}/nar/${a.fileHash}.nar`, c.server.token, bigNarStream(size, 2 * i), a.length)
          if (status !== 201) throw new Error(`big NAR upload answered ${status}`)
          const both = Promise.all([put(`${c.server.url}/nar/${b.fileHash}.nar`, c.server.token, bigNarStream(size, 2 * i + 1), b.length),
            get(`${c.server.url}/nar/${a.fileHash}.nar`)])
          const { result: [up, down], peakRssMiB, peakPssMiB } = await sampledPeakMemoryTreeMiB(c.server.child.pid ?? 0, both)
          if (up !== 201 || down !== 200) throw new Error(`big NAR transfer answered ${up}/${down}`)
          transfer.push({ value: peakRssMiB, cpu: NaN })
          pss.push({ value: peakPssMiB, cpu: NaN })
        } finally {
          for (const f of [a, b]) await sh('find', [c.server.dataDir, '-name', `${f.fileHash}*`, '-delete'])
        }
      }
      const peaks = contenders.map(c => ({ value: peakRssTreeMiB(c.server.child.pid ?? 0), cpu: NaN }))
      const memoryRow = (how: string, results: Sample[]): Row => ({ what: 'memory', how, unit: 'MiB', better: 'lower', cpuUnit: '', results, rounds: 1 })
      rows.push(memoryRow('RSS of the server\'s processes (summed, sampled every 20 ms) while a 4.3 GiB NAR goes up and another comes down, peak', transfer))
      rows.push(memoryRow('the same as PSS, peak', pss))
      rows.push(memoryRow('peak RSS of each of the server\'s processes over the whole run (wrk load included), summed', peaks))
    }
  } finally {
    for (const c of contenders) c.server.child.kill('SIGTERM')
  }

  const short = baseline.commit.slice(0, 7)
  const lines = [
    `Measured ${started.toISOString().slice(0, 16).replace('T', ' ')}–${new Date().toISOString().slice(11, 16)} UTC on ${machine()}; loopback; ` +
      `load average ${loadAtStart.toFixed(1)} at the start, ${os.loadavg()[0]?.toFixed(1)} at the end (the machine is shared); ` +
      `closure of ${closure.paths.length} paths, ${(closure.narBytes / 1e6).toFixed(0)} MB of NAR (zstd). ` +
      `Baseline ${subject}; current ${head}${dirty ? ' with uncommitted changes' : ''}. ` +
      `Medians of the rounds shown, the four servers taking turns in each; server CPU is user + system time of all its processes (from /proc) per request or per round${QUICK ? ' (BENCH_QUICK)' : ''}.`,
    '',
    `| what | how | processes | ${short} | current | current/${short} | change | server CPU, ${short} | server CPU, current | CPU current/${short} | rounds |`,
    '| --- | --- | --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |'
  ]
  for (const r of rows) {
    for (const n of [1, workers]) {
      const base = contenders.findIndex(c => c.build === 'baseline' && c.workers === n)
      const cur = contenders.findIndex(c => c.build === 'current' && c.workers === n)
      const then = r.results[base] ?? NONE
      const now = r.results[cur] ?? NONE
      const failure = contenders[base]?.failure
      const cpuUnit = r.cpuUnit === '' ? '' : ` ${r.cpuUnit}`
      lines.push(`| ${r.what} | ${r.how} (${r.unit}) | ${n === 1 ? '1 process' : `${n} workers`} | ${format(then.value)} | ${format(now.value)} | ${ratio(then.value, now.value)} | ` +
        `${failure !== undefined && Number.isNaN(then.value) ? `baseline cannot run it: ${failure}` : change(then.value, now.value, r.better)} | ` +
        `${Number.isNaN(then.cpu) ? '' : format(then.cpu) + cpuUnit} | ${Number.isNaN(now.cpu) ? '' : format(now.cpu) + cpuUnit} | ${ratio(then.cpu, now.cpu)} | ${r.rounds} |`)
    }
  }
  const table = lines.join('\n')
  console.log(table)
  if (!QUICK) {
    const settings = ['BENCH_ONLY', 'BENCH_RUNS', 'BENCH_SUBSTITUTION_RUNS', 'BENCH_XZ', 'BENCH_WORKERS']
      .filter(name => process.env[name] !== undefined).map(name => `${name}=${process.env[name] ?? ''} `).join('')
    prependToBenchmarks(`## Against ${short} (\`${settings}npm run bench -- --baseline ${rev}\`)\n\n` + table)
  }
}
