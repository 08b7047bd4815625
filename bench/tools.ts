/**
 * Small helpers for the benchmarks: run commands, time them, take medians, parse wrk output.
 * Benchmarks print figures; they never assert on time.
 */
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { MAX_AUTO_WORKERS } from '../src/config/config.js'

/**
 * Points TMPDIR (for this process and every server and Nix process it starts) at one fresh folder
 * and removes it when the benchmark exits, unless BENCH_KEEP=1. A run makes data folders of
 * several GB (the 4 GiB NAR, the copies of the closure); left in /tmp they fill the disk.
 */
export function useScratchTmpdir (name: string): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), `${name}-`))
  process.env.TMPDIR = dir
  if (process.env.BENCH_KEEP === '1') {
    console.error(`${name}: BENCH_KEEP=1, keeping ${dir}`)
    return dir
  }
  const remove = (): void => rmSync(dir, { recursive: true, force: true })
  process.on('exit', remove)
  // Interrupted: remove the folder, then die of the same signal as without this handler.
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => { remove(); process.kill(process.pid, signal) })
  }
  return dir
}

export function sh (file: string, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { env, maxBuffer: 256 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err !== null) reject(new Error(`${file} ${args.slice(0, 6).join(' ')}… failed: ${String(stderr).slice(-2000)}`))
      else resolve(String(stdout))
    })
  })
}

export async function timed (fn: () => Promise<unknown>): Promise<number> {
  const start = process.hrtime.bigint()
  await fn()
  return Number(process.hrtime.bigint() - start) / 1e9
}

export function median (values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[mid] ?? NaN : ((sorted[mid - 1] ?? NaN) + (sorted[mid] ?? NaN)) / 2
}

/**
 * Runs each measurement `times` times, taking turns (a, b, c, a, b, c, …), and returns each one's
 * median. On a shared 2-core machine the load drifts over minutes; taking turns spreads the drift
 * over all contenders instead of handing it to whichever ran last.
 */
export async function alternate (times: number, fns: Array<() => Promise<number>>): Promise<number[]> {
  const values: number[][] = fns.map(() => [])
  for (let i = 0; i < times; i++) {
    for (const [j, fn] of fns.entries()) values[j]?.push(await fn())
  }
  return values.map(median)
}

export { freePort } from '../scripts/test-engines/ports.js'

/** Requests per second from `wrk -t2 -cN -dDs URL`. */
export async function wrkRate (url: string, connections: number, seconds: number): Promise<number> {
  const out = await sh('wrk', [`-t${Math.min(2, connections)}`, `-c${connections}`, `-d${seconds}s`, '--latency', url])
  const rate = /Requests\/sec:\s+([\d.]+)/.exec(out)?.[1]
  if (rate === undefined) throw new Error(`wrk printed no rate:\n${out}`)
  if (/Non-2xx or 3xx responses/.test(out) && !url.includes('0000000000')) throw new Error(`wrk saw errors on ${url}:\n${out}`)
  return Number(rate)
}

/** The environment for a Nix client: its own narinfo cache, no substituters, no cached answers. */
export function nixEnv (extra: string[] = []): NodeJS.ProcessEnv {
  return {
    ...process.env,
    XDG_CACHE_HOME: mkdtempSync(path.join(os.tmpdir(), 'narwhal-bench-nixcache-')),
    NIX_CONFIG: ['experimental-features = nix-command', 'substituters =', 'narinfo-cache-negative-ttl = 0',
      'narinfo-cache-positive-ttl = 0', ...extra].join('\n')
  }
}

/**
 * A Nix client the upload and substitution rows run with: the host's Nix 2.8, or Nix 2.26 in the
 * Debian trixie root of scripts/nix-2.26-root.sh (TMPDIR, where every file of the run is, is
 * reachable inside at the same path; so is 127.0.0.1).
 */
export interface BenchClient { label: string, nix: (args: string[], env: NodeJS.ProcessEnv) => Promise<string> }

const NIX_226_SCRIPT = path.resolve('scripts/nix-2.26-root.sh')

export const HOST_NIX: BenchClient = { label: 'Nix 2.8', nix: async (args, env) => await sh('nix', args, env) }
export const TRIXIE_NIX: BenchClient = {
  label: 'Nix 2.26',
  nix: async (args, env) => await sh(NIX_226_SCRIPT, ['run', '--bind', os.tmpdir(), '--', 'nix', ...args], env)
}
export const BENCH_CLIENTS: BenchClient[] = [HOST_NIX, TRIXIE_NIX]

/** Makes (once) or checks the Nix 2.26 root; fails naming the step when it cannot. */
export async function prepareNix226Root (): Promise<void> {
  await sh(NIX_226_SCRIPT, ['prepare'])
}

/** A netrc file giving `token` to 127.0.0.1, for `nix copy --to` (NIX_CONFIG `netrc-file = …`). */
export function writeNetrc (token: string): string {
  const file = path.join(mkdtempSync(path.join(os.tmpdir(), 'narwhal-bench-netrc-')), 'netrc')
  writeFileSync(file, `machine 127.0.0.1 login bench password ${token}\n`, { mode: 0o600 })
  return file
}

/**
 * Starts a long-running process and resolves once `ready()` answers true. Its stdout goes to
 * `stdout` (a file descriptor) when given, so a server's log can be kept; otherwise nowhere.
 */
export async function startProcess (file: string, args: string[], env: NodeJS.ProcessEnv, ready: () => Promise<boolean>,
  stdout: number | 'ignore' = 'ignore'): Promise<ChildProcess> {
  const child = spawn(file, args, { env, stdio: ['ignore', stdout, 'pipe'] })
  let stderr = ''
  child.stderr?.on('data', (d: Buffer) => { stderr += d.toString() })
  for (let i = 0; i < 200; i++) {
    if (child.exitCode !== null) throw new Error(`${file} exited ${child.exitCode}: ${stderr}`)
    if (await ready().catch(() => false)) return child
    await new Promise(resolve => setTimeout(resolve, 50))
  }
  throw new Error(`${file} did not become ready: ${stderr}`)
}

/** A memory field of /proc/PID/status (VmHWM, VmRSS), in MiB; NaN when absent. Throws once the process is gone. */
function statusMiB (pid: number, field: 'VmHWM' | 'VmRSS'): number {
  const kb = new RegExp(`${field}:\\s+(\\d+) kB`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]
  return kb === undefined ? NaN : Number(kb) / 1024
}

/** Peak resident memory (VmHWM) of a process, in MiB. */
export function peakRssMiB (pid: number): number {
  return statusMiB(pid, 'VmHWM')
}

/**
 * A server's process and all its descendants (cluster workers), from /proc: a multi-process
 * server is measured whole. Children are listed per thread, so every task is asked.
 */
export function processTree (pid: number): number[] {
  const pids = [pid]
  for (let i = 0; i < pids.length; i++) {
    try {
      for (const task of readdirSync(`/proc/${pids[i]}/task`)) {
        const children = readFileSync(`/proc/${pids[i]}/task/${task}/children`, 'utf8').trim()
        if (children !== '') pids.push(...children.split(/\s+/).map(Number))
      }
    } catch {}
  }
  return pids
}

/**
 * Peak resident memory of a server and its worker processes, summed, in MiB: what the machine
 * had to give it. An upper bound (the processes need not peak at the same moment, and pages they
 * share, such as Node's own code, count once per process).
 */
export function peakRssTreeMiB (pid: number): number {
  return processTree(pid).reduce((sum, p) => sum + peakRssMiB(p), 0)
}

/** Resident memory (VmRSS) of a process now, in MiB; 0 once it is gone (a sample may race its exit). */
export function rssMiB (pid: number): number {
  try {
    const mib = statusMiB(pid, 'VmRSS')
    return Number.isNaN(mib) ? 0 : mib
  } catch {
    return 0
  }
}

/**
 * Proportional resident memory (Pss of /proc/PID/smaps_rollup) of a process now, in MiB: its
 * resident pages, each page it shares with n processes counted 1/n. Summed over a server's
 * processes, pages they share (Node's own code, 45 MiB in each here) count once, where RSS
 * sums count them once per process. 0 once the process is gone.
 */
export function pssMiB (pid: number): number {
  try {
    const kb = /^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'))?.[1]
    return kb === undefined ? 0 : Number(kb) / 1024
  } catch {
    return 0
  }
}

/**
 * Samples the summed RSS and PSS of a server's processes every `everyMs` while `during` runs;
 * resolves with the largest sums seen. Unlike peakRssTreeMiB, the processes are added up at the
 * same moment, and only over this stretch of the run.
 */
export async function sampledPeakMemoryTreeMiB<T> (pid: number, during: Promise<T>, everyMs = 20): Promise<{ result: T, peakRssMiB: number, peakPssMiB: number }> {
  let peakRss = 0
  let peakPss = 0
  const sample = (): void => {
    const pids = processTree(pid)
    peakRss = Math.max(peakRss, pids.reduce((sum, p) => sum + rssMiB(p), 0))
    peakPss = Math.max(peakPss, pids.reduce((sum, p) => sum + pssMiB(p), 0))
  }
  sample()
  const timer = setInterval(sample, everyMs)
  try {
    const result = await during
    sample()
    return { result, peakRssMiB: peakRss, peakPssMiB: peakPss }
  } finally {
    clearInterval(timer)
  }
}

/** The worker count for the multi-process narwhal: BENCH_WORKERS, else what `workers: "auto"` starts. */
export function benchWorkers (): number {
  const raw = process.env.BENCH_WORKERS
  if (raw === undefined) return Math.min(MAX_AUTO_WORKERS, os.availableParallelism())
  if (!/^[1-9]\d*$/.test(raw)) throw new Error(`BENCH_WORKERS: expected an integer >= 1, got ${JSON.stringify(raw)}`)
  return Number(raw)
}

/** Cores, CPU model, memory, Node and nginx versions, for the line above a table. */
export function machine (): string {
  const cpu = (/model name\s*:\s*(.*)/.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? 'unknown CPU').trim()
  return `${os.cpus().length} cores (${cpu}), ${(os.totalmem() / 1024 ** 3).toFixed(0)} GiB RAM, Node ${process.version}, ` +
    spawnSync('nginx', ['-v']).stderr.toString().trim().replace('nginx version: ', '')
}

/** utime + stime of a process and all its descendants (cluster workers), in seconds (CLK_TCK 100). */
export function cpuSecondsTree (pid: number): number {
  let ticks = 0
  for (const p of processTree(pid)) {
    try {
      const fields = readFileSync(`/proc/${p}/stat`, 'utf8').replace(/^.*\) /s, '').split(' ')
      ticks += Number(fields[11]) + Number(fields[12])
    } catch {}
  }
  return ticks / 100
}

/** Puts a section at the top of BENCHMARKS.md, under its header: newest run first. */
export function prependToBenchmarks (section: string): void {
  const file = 'BENCHMARKS.md'
  const header = '# Benchmarks\n\nProduced by `npm run bench` (bench/run.ts). Newest run first; the notes below the tables say what bounds each figure.\n\n'
  let previous = ''
  try { previous = readFileSync(file, 'utf8').replace(header, '') } catch {}
  writeFileSync(file, header + section + '\n\n' + previous)
}
