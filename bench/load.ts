/**
 * `npm run bench:load`: narwhal under mixed load. For LOAD_SECONDS, LOAD_READERS readers fetch
 * narinfos (hits and misses) and NARs as fast as the server answers, while LOAD_PUSHERS pushers
 * upload freshly made store paths, each through a real client process, in a loop.
 *
 *   server    `narwhal serve` as shipped (bench/servers.ts), a real process on a fresh data
 *             folder, log level warn, log kept in bench/out/load-server.log; its memory (the sum
 *             of VmRSS over its process tree) is sampled from /proc every 250 ms
 *   preload   `nix copy --to` of half of the bench closure (bench/closure.ts, LOAD_CLOSURE_MB):
 *             the chain up to its middle step and the real files those steps reference; the other
 *             half gives misses with real store-path hashes
 *   readers   one undici Pool, one keep-alive connection per reader; each reader picks 45 %
 *             narinfo hits (StorePath checked), 15 % misses (404 expected), 40 % NARs (200 and
 *             exactly FileSize bytes expected); paths pushed during the run join the hits
 *   pushers   each loop: `nix-store --add` of a folder of random and compressible files of mixed
 *             sizes (1 KiB to 16 MiB), `nix-build` of a small derivation referencing it and one
 *             preloaded path, then the upload of that closure: even pushers run `nix copy --to`,
 *             odd ones `narwhal push`; after each upload both new narinfos must be served (200).
 *             One time in three, a race: two pushers take the same new path (at least 16 MiB)
 *             and start their uploads together, as two CI builders of one output do
 *
 * An error is any answer other than the expected one, a socket error or timeout, a push that
 * failed, a 5xx the server counted in /metrics (clients retry some 5xx, so their own exit status
 * is not enough), an error-level line in the server log, or the server dying. No request is ever
 * retried here: the point is to see failures. Exits 1 when there was any error, so the run can be
 * used as a check. Prints one table and appends it, with the machine, to bench/out/load.md.
 *
 *   LOAD_SECONDS (60)  LOAD_READERS (64)  LOAD_PUSHERS (4)  LOAD_CLOSURE_MB (150)
 *   --workers N or NARWHAL_WORKERS: passed to the server as NARWHAL_WORKERS (for a server that
 *   serves from several processes; memory is summed over the whole process tree either way)
 */
import { randomBytes, randomInt } from 'node:crypto'
import { appendFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { createHistogram, monitorEventLoopDelay, type RecordableHistogram } from 'node:perf_hooks'
import { parseArgs, promisify } from 'node:util'
import { Pool } from 'undici'
import { encodeNix32 } from '../src/nix/nix32.js'
import { buildBenchClosure } from './closure.js'
import { startNarwhal, type Narwhal } from './servers.js'
import { nixEnv, processTree, sh, useScratchTmpdir, writeNetrc } from './tools.js'

const CLI = path.resolve('dist/src/cli/main.js')
const OUT_DIR = path.resolve('bench/out')

function setting (name: string, fallback: number, min: number): number {
  const raw = process.env[name]
  if (raw === undefined || raw === '') return fallback
  const value = Number(raw)
  if (!Number.isSafeInteger(value) || value < min) throw new Error(`${name}: expected an integer >= ${min}, got ${JSON.stringify(raw)}`)
  return value
}

function workersSetting (): string | undefined {
  const { values } = parseArgs({ options: { workers: { type: 'string' } }, strict: true })
  const raw = values.workers ?? process.env.NARWHAL_WORKERS
  if (raw === undefined || raw === '') return undefined
  if (!/^[1-9]\d*$/.test(raw)) throw new Error(`--workers / NARWHAL_WORKERS: expected an integer >= 1, got ${JSON.stringify(raw)}`)
  return raw
}

const SECONDS = setting('LOAD_SECONDS', 60, 1)
const READERS = setting('LOAD_READERS', 64, 1)
const PUSHERS = setting('LOAD_PUSHERS', 4, 0)
const CLOSURE_MB = setting('LOAD_CLOSURE_MB', 150, 20)
const WORKERS = workersSetting()

/** Outcomes of one kind of operation: successes with their latency, failures with their reason. */
class Tally {
  served = 0
  errors = 0
  bytes = 0
  /** Microseconds, successes only. */
  readonly latency: RecordableHistogram = createHistogram()
  readonly reasons = new Map<string, number>()

  constructor (readonly name: string) {}

  ok (started: bigint, bytes: number): void {
    this.served++
    this.bytes += bytes
    this.latency.record(Math.max(1, Math.round(Number(process.hrtime.bigint() - started) / 1000)))
  }

  fail (reason: string): void {
    this.errors++
    this.reasons.set(reason, (this.reasons.get(reason) ?? 0) + 1)
  }
}

/** A path the cache holds: its narinfo and its NAR file. */
interface Stored { hashPart: string, narPath: string, fileSize: number }

function hashPartOf (storePath: string): string {
  return path.basename(storePath).slice(0, 32)
}

function pick<T> (items: T[]): T {
  const item = items[randomInt(items.length)]
  if (item === undefined) throw new Error('pick from an empty list')
  return item
}

/** The end of a failed command's message, where Nix and narwhal push say what went wrong. */
function lastLines (message: string): string {
  const lines = message.split('\n').map(l => l.trim()).filter(l => l !== '')
  return lines.slice(-2).join(' / ').slice(-400)
}

function describe (err: unknown): string {
  const e = err as { code?: unknown, message?: unknown }
  return `${typeof e.code === 'string' ? e.code + ': ' : ''}${String(e.message ?? err)}`
}

async function readBody (body: AsyncIterable<Buffer>, keep: boolean): Promise<{ bytes: number, text: string }> {
  const chunks: Buffer[] = []
  let bytes = 0
  for await (const chunk of body) {
    bytes += chunk.length
    if (keep) chunks.push(chunk)
  }
  return { bytes, text: keep ? Buffer.concat(chunks).toString('utf8') : '' }
}

/** The narinfo of `hashPart`, or undefined on 404; throws on anything else. Not counted. */
async function storedOf (pool: Pool, hashPart: string): Promise<Stored | undefined> {
  const res = await pool.request({ method: 'GET', path: `/${hashPart}.narinfo` })
  const { text } = await readBody(res.body, true)
  if (res.statusCode === 404) return undefined
  const narPath = /^URL: (.*)$/m.exec(text)?.[1]
  const fileSize = /^FileSize: (\d+)$/m.exec(text)?.[1]
  if (res.statusCode !== 200 || narPath === undefined || fileSize === undefined) {
    throw new Error(`narinfo ${hashPart}: status ${res.statusCode}: ${text.slice(0, 200)}`)
  }
  return { hashPart, narPath: `/${narPath}`, fileSize: Number(fileSize) }
}

interface Tallies { hit: Tally, miss: Tally, nar: Tally, nixCopy: Tally, narwhalPush: Tally }

/** One GET, checked against what it must answer. Never retried. */
async function fetchChecked (pool: Pool, tally: Tally, urlPath: string, expected: { status: number, bytes?: number, contains?: string }): Promise<string> {
  const started = process.hrtime.bigint()
  try {
    const res = await pool.request({ method: 'GET', path: urlPath })
    const { bytes, text } = await readBody(res.body, expected.bytes === undefined)
    if (res.statusCode !== expected.status) tally.fail(`status ${res.statusCode}${text === '' ? '' : ': ' + text.trim().slice(0, 160)}`)
    else if (expected.bytes !== undefined && bytes !== expected.bytes) tally.fail(`body of ${bytes} bytes, FileSize says ${expected.bytes}`)
    else if (expected.contains !== undefined && !text.includes(expected.contains)) tally.fail(`body lacks ${JSON.stringify(expected.contains)}`)
    else tally.ok(started, bytes)
    return text
  } catch (err) {
    tally.fail(describe(err))
    return ''
  }
}

async function reader (pool: Pool, hits: Stored[], misses: string[], tallies: Tallies, deadline: number): Promise<void> {
  while (Date.now() < deadline) {
    const roll = Math.random()
    if (roll < 0.45) {
      const s = pick(hits)
      await fetchChecked(pool, tallies.hit, `/${s.hashPart}.narinfo`, { status: 200, contains: `StorePath: /nix/store/${s.hashPart}-` })
    } else if (roll < 0.60) {
      await fetchChecked(pool, tallies.miss, `/${pick(misses)}.narinfo`, { status: 404 })
    } else {
      const s = pick(hits)
      await fetchChecked(pool, tallies.nar, s.narPath, { status: 200, bytes: s.fileSize })
    }
  }
}

const FILE_SIZES = [1024, 16 * 1024, 256 * 1024, 1024 ** 2, 4 * 1024 ** 2, 16 * 1024 ** 2]

const randomBytesAsync = promisify(randomBytes)

/**
 * A new store path: a folder of 1 to 3 files of mixed sizes, random or compressible. The random
 * bytes and the writes stay off the event loop the readers share.
 */
async function addRandomPath (work: string, env: NodeJS.ProcessEnv, options: { large?: boolean } = {}): Promise<string> {
  const nonce = randomBytes(6).toString('hex')
  const dir = path.join(work, `narwhal-load-${nonce}`)
  mkdirSync(dir)
  for (let i = 0, n = 1 + randomInt(3); i < n; i++) {
    const size = options.large === true && i === 0 ? 16 * 1024 ** 2 : pick(FILE_SIZES)
    const random = (options.large === true && i === 0) || Math.random() < 0.5
    const data = random ? await randomBytesAsync(size) : Buffer.alloc(size, `narwhal load ${nonce} ${i}\n`)
    await writeFile(path.join(dir, `file-${i}`), data)
  }
  return await addToStore(dir, env)
}

/**
 * Where two pushers meet to upload one path at the same moment, as two CI builders of one output
 * do: the first to want a race opens the slot and makes the path, the next one joins, and each
 * starts its upload once both are ready (or alone after 10 s).
 */
class RaceSlot {
  private arrivals = 0
  private release: () => void = () => {}
  private readonly met = new Promise<void>(resolve => { this.release = resolve })

  constructor (readonly path: Promise<string>) {
    // A failed path is reported by each pusher that awaits it; this keeps it from being unhandled.
    path.catch(() => {})
  }

  /** Resolves true when the other pusher is ready too, false after `ms` alone. */
  async arrive (ms: number): Promise<boolean> {
    if (++this.arrivals >= 2) this.release()
    let timer: NodeJS.Timeout | undefined
    const alone = new Promise<boolean>(resolve => { timer = setTimeout(() => resolve(false), ms) })
    const met = await Promise.race([this.met.then(() => true), alone])
    clearTimeout(timer)
    return met
  }
}

async function addToStore (dir: string, env: NodeJS.ProcessEnv): Promise<string> {
  try {
    return (await sh('nix-store', ['--add', dir], env)).trim()
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

/** A derivation output referencing `fresh` and `preloaded`: an upload with references to check. */
async function buildReferrer (fresh: string, preloaded: string, env: NodeJS.ProcessEnv): Promise<string> {
  const expr = `let fresh = builtins.storePath ${JSON.stringify(fresh)}; old = builtins.storePath ${JSON.stringify(preloaded)}; in
    derivation { name = "narwhal-load-ref-${randomBytes(6).toString('hex')}"; system = builtins.currentSystem;
      builder = "/bin/sh"; args = [ "-c" "echo \${fresh} \${old} > $out" ]; }`
  return (await sh('nix-build', ['--no-out-link', '-E', expr], env)).trim()
}

interface PusherContext {
  server: Narwhal
  pool: Pool
  hits: Stored[]
  preloaded: string[]
  made: string[]
  /** Every path a push brought into the cache, with its NAR file size. */
  pushed: Map<string, number>
  /** A race a pusher opened that no other has joined yet. */
  openRace: RaceSlot | undefined
  /** Races in which both pushers started their upload together. */
  races: number
  tokenFile: string
  deadline: number
}

async function pusher (index: number, ctx: PusherContext, tally: Tally): Promise<void> {
  const useNixCopy = index % 2 === 0
  const env = nixEnv([`netrc-file = ${writeNetrc(ctx.server.token)}`])
  const work = mkdtempSync(path.join(os.tmpdir(), 'narwhal-load-pusher-'))
  try {
    while (Date.now() < ctx.deadline) {
      let top: string
      let fresh: string
      let race: RaceSlot | undefined
      if (Math.random() < 1 / 3) {
        // At least 16 MiB, so that the second upload begins before the first is stored.
        race = ctx.openRace ?? new RaceSlot(addRandomPath(work, env, { large: true }))
        ctx.openRace = ctx.openRace === undefined ? race : undefined
      }
      try {
        fresh = race === undefined ? await addRandomPath(work, env) : await race.path
        ctx.made.push(fresh)
        top = await buildReferrer(fresh, pick(ctx.preloaded), env)
        ctx.made.push(top)
      } catch (err) {
        tally.fail(`client-side setup: ${describe(err).slice(-300)}`)
        continue
      }
      if (race !== undefined) {
        // Both pushers of a race see true; each counts half of it.
        if (await race.arrive(10_000)) ctx.races += 0.5
        if (ctx.openRace === race) ctx.openRace = undefined
      }
      const started = process.hrtime.bigint()
      try {
        if (useNixCopy) {
          await sh('nix', ['copy', '--to', `${ctx.server.url}?secret-key=${ctx.server.secretKey}&compression=zstd`, top], env)
        } else {
          await sh('node', [CLI, 'push', top], {
            ...env, NARWHAL_SERVER: ctx.server.url, NARWHAL_TOKEN_FILE: ctx.tokenFile, NARWHAL_SECRET_KEY_FILES: ctx.server.secretKey
          })
        }
      } catch (err) {
        tally.fail(lastLines(describe(err)))
        continue
      }
      // Read after write: once the client says done, both new paths must be served.
      let uploaded = 0
      try {
        for (const p of [fresh, top]) {
          const stored = await storedOf(ctx.pool, hashPartOf(p))
          if (stored === undefined) throw new Error(`${p} pushed but its narinfo answers 404`)
          uploaded += stored.fileSize
          ctx.hits.push(stored)
          ctx.pushed.set(p, stored.fileSize)
        }
      } catch (err) {
        tally.fail(describe(err))
        continue
      }
      tally.ok(started, uploaded)
    }
  } finally {
    rmSync(work, { recursive: true, force: true })
  }
}

/**
 * The paths made for the run are garbage once it ends. Each `.drv` references its input path and
 * keeps it alive, so the derivations go in the same call as their outputs and inputs.
 */
async function deleteMadePaths (made: string[]): Promise<void> {
  if (made.length === 0) return
  try {
    const outputs = made.filter(p => p.includes('-narwhal-load-ref-'))
    const derivers = outputs.length === 0 ? [] : (await sh('nix-store', ['--query', '--deriver', ...outputs])).trim().split('\n')
    await sh('nix-store', ['--delete', ...made, ...derivers.filter(d => d.endsWith('.drv'))])
  } catch (err) {
    process.stderr.write(`note: could not delete the run's store paths: ${describe(err).slice(0, 300)}\n`)
  }
}

/** CPU seconds (user + system) a process has used, from /proc/<pid>/stat (clock ticks of 1/100 s). */
function cpuSeconds (pid: number): number {
  try {
    // The fields after the command name, which is in parentheses and may hold spaces.
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /s, '').split(' ')
    return (Number(fields[11]) + Number(fields[12])) / 100
  } catch {
    return 0
  }
}

function statusKiB (pid: number, field: 'VmRSS' | 'VmHWM'): number {
  try {
    const kb = new RegExp(`${field}:\\s+(\\d+) kB`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]
    return kb === undefined ? 0 : Number(kb)
  } catch {
    return 0
  }
}

/** Samples the summed VmRSS of a process tree every 250 ms. */
class MemorySampler {
  peakKiB = 0
  lastKiB = 0
  samples = 0
  private readonly timer: NodeJS.Timeout

  constructor (private readonly pid: number) {
    this.sample()
    this.timer = setInterval(() => this.sample(), 250)
  }

  sample (): void {
    const kib = processTree(this.pid).reduce((sum, p) => sum + statusKiB(p, 'VmRSS'), 0)
    if (kib === 0) return
    this.samples++
    this.lastKiB = kib
    this.peakKiB = Math.max(this.peakKiB, kib)
  }

  stop (): void {
    clearInterval(this.timer)
  }
}

interface ServerCounts {
  fiveXx: number
  byStatus: Map<string, number>
  refusals: Map<string, number>
  /** The server's own event-loop delay since the previous scrape (prom-client resets it on each), seconds. */
  loopDelayP99: number
  loopDelayMax: number
}

/** What the server itself counted (GET /metrics): every status it answered, every refusal code. */
async function serverCounts (pool: Pool): Promise<ServerCounts> {
  const res = await pool.request({ method: 'GET', path: '/metrics' })
  const { text } = await readBody(res.body, true)
  if (res.statusCode !== 200) throw new Error(`/metrics answered ${res.statusCode}`)
  const counts: ServerCounts = { fiveXx: 0, byStatus: new Map(), refusals: new Map(), loopDelayP99: NaN, loopDelayMax: NaN }
  for (const line of text.split('\n')) {
    const request = /^narwhal_http_requests_total\{(.*)\} (\d+)$/.exec(line)
    if (request !== null) {
      const labels = request[1] ?? ''
      const status = /status="(\d+)"/.exec(labels)?.[1] ?? '?'
      const key = `${/method="(\w+)"/.exec(labels)?.[1] ?? '?'} ${/route="([^"]*)"/.exec(labels)?.[1] ?? '?'} ${status}`
      counts.byStatus.set(key, (counts.byStatus.get(key) ?? 0) + Number(request[2]))
      if (status.startsWith('5')) counts.fiveXx += Number(request[2])
    }
    const delay = /^narwhal_nodejs_eventloop_lag_(p99|max)_seconds ([\d.e+-]+)$/.exec(line)
    if (delay?.[1] === 'p99') counts.loopDelayP99 = Number(delay[2])
    if (delay?.[1] === 'max') counts.loopDelayMax = Number(delay[2])
    const refusal = /^narwhal_refusals_total\{code="([^"]*)"\} (\d+)$/.exec(line)
    if (refusal !== null) counts.refusals.set(refusal[1] ?? '?', Number(refusal[2]))
  }
  return counts
}

/** Warning and error lines of the server's pino log (level 40 and 50+). */
function serverLogProblems (logFile: string): { warnings: string[], errors: string[] } {
  const warnings: string[] = []
  const errors: string[] = []
  const text = existsSync(logFile) ? readFileSync(logFile, 'utf8') : ''
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue
    let entry: { level?: number, msg?: string, err?: { message?: string } }
    try { entry = JSON.parse(line) } catch { errors.push(`unparsable log line: ${line.slice(0, 200)}`); continue }
    const message = `${entry.msg ?? ''}${entry.err?.message === undefined ? '' : ': ' + entry.err.message}`.slice(0, 300)
    if ((entry.level ?? 0) >= 50) errors.push(message)
    else if ((entry.level ?? 0) >= 40) warnings.push(message)
  }
  return { warnings, errors }
}

function countDistinct (items: string[]): Map<string, number> {
  const counts = new Map<string, number>()
  for (const item of items) counts.set(item, (counts.get(item) ?? 0) + 1)
  return counts
}

function ms (histogram: RecordableHistogram, percentile: number | 'max'): string {
  if (histogram.count === 0) return '–'
  const us = percentile === 'max' ? histogram.max : histogram.percentile(percentile)
  return (us / 1000).toFixed(us < 10_000 ? 2 : 0)
}

function mb (bytes: number): string {
  return (bytes / 1e6).toFixed(bytes < 10e6 ? 2 : 0)
}

function machine (): string {
  const cpu = (/model name\s*:\s*(.*)/.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? 'unknown CPU').trim()
  return `${os.cpus().length} cores (${cpu}), ${(os.totalmem() / 1024 ** 3).toFixed(0)} GiB RAM`
}

async function main (): Promise<void> {
  useScratchTmpdir('narwhal-load')
  const startedAt = new Date()
  const loadBefore = os.loadavg()[0] ?? NaN
  const nixVersion = (await sh('nix', ['--version'])).trim()
  const setupEnv = nixEnv()
  process.stderr.write(`building the bench closure (${CLOSURE_MB} MB target)…\n`)
  const closure = await buildBenchClosure(setupEnv, CLOSURE_MB * 1024 * 1024)

  mkdirSync(OUT_DIR, { recursive: true })
  const logFile = path.join(OUT_DIR, 'load-server.log')
  writeFileSync(logFile, '')
  const server = await startNarwhal(process.env, { NARWHAL_LOG_LEVEL: 'warn', ...(WORKERS === undefined ? {} : { NARWHAL_WORKERS: WORKERS }) }, logFile)
  let serverStderr = ''
  server.child.stderr?.on('data', (d: Buffer) => { serverStderr += d.toString() })
  let serverExit: string | undefined
  let stopping = false
  server.child.on('exit', (code, signal) => { if (!stopping) serverExit = `exited ${code ?? ''}${signal ?? ''} during the run` })
  const tokenFile = path.join(mkdtempSync(path.join(os.tmpdir(), 'narwhal-load-token-')), 'token')
  writeFileSync(tokenFile, server.token, { mode: 0o600 })
  const pool = new Pool(server.url, { connections: READERS + PUSHERS + 2, keepAliveTimeout: 30_000, headersTimeout: 60_000, bodyTimeout: 60_000 })
  const made: string[] = []
  let exitCode = 0
  try {
    const middle = closure.paths.find(p => p.endsWith('-bench-step-150'))
    if (middle === undefined) throw new Error('the bench closure has no bench-step-150')
    process.stderr.write('preloading half of the closure with nix copy --to…\n')
    await sh('nix', ['copy', '--to', `${server.url}?secret-key=${server.secretKey}&compression=zstd`, middle],
      nixEnv([`netrc-file = ${writeNetrc(server.token)}`]))
    const hits: Stored[] = []
    const misses: string[] = []
    for (const p of closure.paths) {
      const stored = await storedOf(pool, hashPartOf(p))
      if (stored === undefined) misses.push(hashPartOf(p))
      else hits.push(stored)
    }
    for (let i = 0; i < Math.max(20, misses.length / 4); i++) misses.push(encodeNix32(randomBytes(20)))
    const preloaded = closure.paths.filter(p => hits.some(h => h.hashPart === hashPartOf(p)))
    const preloadBytes = hits.reduce((sum, h) => sum + h.fileSize, 0)
    process.stderr.write(`preloaded ${hits.length} paths (${mb(preloadBytes)} MB of zstd NAR); ${misses.length} miss hashes\n`)

    const tallies: Tallies = {
      hit: new Tally('narinfo hit'),
      miss: new Tally('narinfo miss (404)'),
      nar: new Tally('NAR'),
      nixCopy: new Tally('push: nix copy --to'),
      narwhalPush: new Tally('push: narwhal push')
    }
    const pid = server.child.pid ?? 0
    const memory = new MemorySampler(pid)
    const rssBeforeKiB = memory.lastKiB
    const cpuBefore = processTree(pid).reduce((sum, p) => sum + cpuSeconds(p), 0)
    const clientCpuBefore = process.cpuUsage()
    await serverCounts(pool) // resets the server's event-loop delay histogram, so the final scrape covers the load only
    const loopDelay = monitorEventLoopDelay({ resolution: 10 })
    loopDelay.enable()
    process.stderr.write(`load: ${READERS} readers, ${PUSHERS} pushers, ${SECONDS} s; server pid ${pid}…\n`)
    const loadStart = Date.now()
    const deadline = loadStart + SECONDS * 1000
    const ctx: PusherContext = { server, pool, hits, preloaded, made, pushed: new Map(), openRace: undefined, races: 0, tokenFile, deadline }
    const secondsSinceStart = (): number => (Date.now() - loadStart) / 1000
    // Readers stop at the deadline; a pusher finishes the upload it has begun, which can take longer.
    const [readSeconds, pushSeconds] = await Promise.all([
      Promise.all(Array.from({ length: READERS }, async () => await reader(pool, hits, misses, tallies, deadline))).then(secondsSinceStart),
      Promise.all(Array.from({ length: PUSHERS }, async (_, i) => await pusher(i, ctx, i % 2 === 0 ? tallies.nixCopy : tallies.narwhalPush))).then(secondsSinceStart)
    ])
    loopDelay.disable()
    memory.sample()
    memory.stop()
    const rssEndKiB = memory.lastKiB
    const hwmKiB = processTree(pid).reduce((sum, p) => sum + statusKiB(p, 'VmHWM'), 0)
    const serverCpu = processTree(pid).reduce((sum, p) => sum + cpuSeconds(p), 0) - cpuBefore
    const clientCpuUsage = process.cpuUsage(clientCpuBefore)
    const clientCpu = (clientCpuUsage.user + clientCpuUsage.system) / 1e6

    let countsProblem = 'not read: the server died'
    const counts = serverExit === undefined
      ? await serverCounts(pool).catch((err: unknown) => { countsProblem = `not read: ${describe(err)}`; return undefined })
      : undefined
    stopping = true
    server.child.kill('SIGTERM')
    const shutdown = await new Promise<string>(resolve => {
      if (serverExit !== undefined) { resolve('not tried: the server had died'); return }
      const timer = setTimeout(() => resolve('still running 15 s after SIGTERM'), 15_000)
      server.child.once('exit', (code, signal) => { clearTimeout(timer); resolve(code === 0 ? 'clean' : `exited ${code ?? ''}${signal ?? ''}`) })
    })
    const log = serverLogProblems(logFile)

    const rows = [tallies.hit, tallies.miss, tallies.nar, tallies.nixCopy, tallies.narwhalPush]
    const serverRows: Array<{ what: string, errors: number, detail: string }> = [
      { what: 'server: 5xx answers counted in /metrics', errors: counts?.fiveXx ?? (serverExit === undefined ? 1 : 0), detail: counts === undefined ? countsProblem : '' },
      { what: 'server: error-level log lines', errors: log.errors.length, detail: '' },
      { what: 'server: died during the run', errors: serverExit === undefined ? 0 : 1, detail: serverExit ?? '' },
      { what: 'server: shutdown on SIGTERM', errors: shutdown === 'clean' || serverExit !== undefined ? 0 : 1, detail: shutdown }
    ]
    const totalErrors = rows.reduce((sum, r) => sum + r.errors, 0) + serverRows.reduce((sum, r) => sum + r.errors, 0)
    const pushed = tallies.nixCopy.served + tallies.narwhalPush.served
    const reads = tallies.hit.served + tallies.miss.served + tallies.nar.served

    const loadSeconds = Math.max(readSeconds, pushSeconds)
    const percentOfCore = (seconds: number): string => `${(100 * seconds / loadSeconds).toFixed(0)} % of one core`
    const lines = [
      `## Load test, ${startedAt.toISOString().slice(0, 16).replace('T', ' ')} UTC`,
      '',
      `${machine()}, Node ${process.version}, ${nixVersion}; loadavg ${loadBefore.toFixed(2)} before the run. ` +
        `${READERS} readers (one keep-alive connection each) for ${readSeconds.toFixed(1)} s, ${PUSHERS} pushers ` +
        `(the last upload ended at ${pushSeconds.toFixed(1)} s); ` +
        `server: \`narwhal serve\`${WORKERS === undefined ? '' : `, NARWHAL_WORKERS=${WORKERS}`}, log level warn; ` +
        `preloaded ${preloaded.length} of ${closure.paths.length} bench-closure paths (${mb(preloadBytes)} MB zstd NAR). ` +
        'Client and server share the machine, so latencies include the client\'s own queueing.',
      '',
      '| kind | served | per s | errors | p50 ms | p99 ms | max ms | MB |',
      '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
      ...rows.map(r => `| ${r.name} | ${r.served} | ${(r.served / ([tallies.nixCopy, tallies.narwhalPush].includes(r) ? pushSeconds : readSeconds)).toFixed(1)} | ${r.errors} | ${ms(r.latency, 50)} | ${ms(r.latency, 99)} | ${ms(r.latency, 'max')} | ${mb(r.bytes)} |`),
      ...serverRows.map(r => `| ${r.what}${r.detail === '' ? '' : ` (${r.detail})`} |  |  | ${r.errors} |  |  |  |  |`),
      `| **all reads / all errors** | **${reads}** | **${(reads / readSeconds).toFixed(0)}** | **${totalErrors}** |  |  |  | **${mb(tallies.hit.bytes + tallies.miss.bytes + tallies.nar.bytes)}** |`,
      '',
      `- Uploads completed: ${pushed} closures (${tallies.nixCopy.served} by nix copy, ${tallies.narwhalPush.served} by narwhal push), ` +
        `${ctx.pushed.size} distinct new store paths, ${mb([...ctx.pushed.values()].reduce((a, b) => a + b, 0))} MB of zstd NAR; push latency is one whole ` +
        `client run (a new path of 1 KiB to 48 MiB plus its referrer). Races (two pushers starting to upload one new path together): ${ctx.races}.`,
      `- Server memory (VmRSS summed over its process tree, ${memory.samples} samples every 250 ms): ${(rssBeforeKiB / 1024).toFixed(0)} MiB ` +
        `before the load, peak ${(memory.peakKiB / 1024).toFixed(0)} MiB, ${(rssEndKiB / 1024).toFixed(0)} MiB at the end; ` +
        `VmHWM ${(hwmKiB / 1024).toFixed(0)} MiB.`,
      `- CPU time during the load: server ${serverCpu.toFixed(1)} s (${percentOfCore(serverCpu)}), this load client ${clientCpu.toFixed(1)} s ` +
        `(${percentOfCore(clientCpu)}; the nix and narwhal push processes it starts are not counted); the machine has ${os.cpus().length} cores.`,
      `- Event-loop delay during the load: server p99 ${((counts?.loopDelayP99 ?? NaN) * 1000).toFixed(0)} ms, ` +
        `max ${((counts?.loopDelayMax ?? NaN) * 1000).toFixed(0)} ms (its /metrics); load client p99 ` +
        `${(loopDelay.percentile(99) / 1e6).toFixed(0)} ms, max ${(loopDelay.max / 1e6).toFixed(0)} ms.`
    ]
    const details: string[] = []
    for (const r of rows) {
      for (const [reason, n] of r.reasons) details.push(`- ${r.name}: ${n} × ${reason}`)
    }
    for (const [message, n] of countDistinct(log.errors)) details.push(`- server log error: ${n} × ${message}`)
    for (const [message, n] of countDistinct(log.warnings)) details.push(`- server log warning (not counted): ${n} × ${message}`)
    if (counts !== undefined) {
      for (const [key, n] of counts.byStatus) if (/ 5\d\d$/.test(key)) details.push(`- server /metrics: ${n} × ${key}`)
      const writes = [...counts.byStatus].filter(([key]) => /^(PUT|POST) /.test(key)).map(([key, n]) => `${key}: ${n}`)
      // 200 to a PUT means "already stored": the concurrent uploads of one path did happen.
      if (writes.length > 0) details.push(`- server answers to uploads (not counted): ${writes.join(', ')}`)
      const refusals = [...counts.refusals].filter(([code]) => code !== 'NARWHAL_NOT_FOUND')
      if (refusals.length > 0) details.push(`- server refusals other than NOT_FOUND (not counted; a failed push shows above): ${refusals.map(([c, n]) => `${c} ${n}`).join(', ')}`)
    }
    if (serverStderr.trim() !== '') details.push(`- server stderr: ${serverStderr.trim().slice(-1500)}`)
    if (details.length > 0) lines.push('', 'Details:', '', ...details)
    const report = lines.join('\n') + '\n'
    process.stdout.write('\n' + report)
    appendFileSync(path.join(OUT_DIR, 'load.md'), report + '\n')
    process.stderr.write(`appended to ${path.join(OUT_DIR, 'load.md')}; server log in ${logFile}\n`)
    if (totalErrors > 0) exitCode = 1
  } finally {
    stopping = true
    if (server.child.exitCode === null) server.child.kill('SIGTERM')
    await pool.close()
    rmSync(server.dataDir, { recursive: true, force: true })
    rmSync(path.dirname(tokenFile), { recursive: true, force: true })
    await deleteMadePaths(made)
  }
  process.exitCode = exitCode
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? err.stack ?? err.message : String(err)}\n`)
  process.exitCode = 1
})
