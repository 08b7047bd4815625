/**
 * Ingest micro-benchmark: what verifying an upload costs the server, in CPU time, without Nix.
 *
 *   node dist/bench/ingest-cpu.js
 *
 *   BENCH_RUNS=5                          runs per figure (medians are printed)
 *   BENCH_NAR_DIR=/usr/lib/x86_64-linux-gnu   the large NAR (zstd)
 *   BENCH_XZ_DIR=/usr/lib/python3.11      the xz NAR
 *   BENCH_SMALL=300                       small paths (real small files, one NAR each, zstd)
 *   BENCH_ONLY=large,xz,small,http,http-large   a subset of the rows
 *   BENCH_SERVER_NODE_OPTIONS=…           NODE_OPTIONS for the HTTP row's server (e.g. --require a profiler)
 *   BENCH_HTTP_CONCURRENCY=1              paths uploaded at a time in the HTTP row, each on its own connection
 *   BENCH_SERVER_CLI=…/dist/src/cli/main.js   the HTTP rows' server: another build's (this one's by default),
 *                                         so builds can take turns under one harness
 *
 * Rows:
 *   - large zstd NAR and xz NAR through storeNar (ingest, fsync, row + rename + directory fsync)
 *     on a fresh data folder: process CPU (user + system, all threads) per MB of NAR;
 *   - small NARs through storeNar one after another: CPU and wall time per path;
 *   - the large zstd NAR over HTTP (one PUT with `Expect: 100-continue`, in 64 KiB writes) to
 *     `narwhal serve` in a child process: the server's CPU (from /proc/PID/stat) per MB of NAR,
 *     and how long the client waits for the answer after its last byte (the tail of the
 *     verification and the fsync before the answer);
 *   - small paths over HTTP against `narwhal serve` in a child process, the requests Nix 2.8's
 *     `nix copy --to` makes per path (GET narinfo 404, HEAD nar 404, PUT nar with
 *     `Expect: 100-continue`, PUT signed narinfo), one path at a time: the server's CPU (from
 *     /proc/PID/stat) and the wall time per path.
 *
 * The compressed NARs are built once with the project's NAR writer and codecs and kept in
 * $TMPDIR/narwhal-bench-ingest/ (delete it when the source folders change). Bodies are fed in
 * 64 KiB chunks, the size a socket read delivers. Prints a table; never asserts on time.
 */
import { createHash } from 'node:crypto'
import { once } from 'node:events'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync, createWriteStream } from 'node:fs'
import http from 'node:http'
import os from 'node:os'
import path from 'node:path'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { loadConfig } from '../src/config/config.js'
import { openCache } from '../src/cache/open-cache.js'
import { storeNar } from '../src/cache/store-nar.js'
import type { Compression } from '../src/nix/compression.js'
import { extensionFor } from '../src/nix/compression.js'
import { fingerprintPath } from '../src/nix/fingerprint.js'
import { formatNarInfo } from '../src/nix/narinfo.js'
import { encodeNix32 } from '../src/nix/nix32.js'
import { dumpPath } from '../src/pusher/nar-writer.js'
import { parseSecretKey } from '../src/signing/keys.js'
import { createCompressor } from '../src/nix/codecs.js'
import { startNarwhal } from './servers.js'
import { median, useScratchTmpdir } from './tools.js'

const RUNS = Number(process.env.BENCH_RUNS ?? 5)
const NAR_DIR = process.env.BENCH_NAR_DIR ?? '/usr/lib/x86_64-linux-gnu'
const XZ_DIR = process.env.BENCH_XZ_DIR ?? '/usr/lib/python3.11'
const SMALL = Number(process.env.BENCH_SMALL ?? 300)
const HTTP_CONCURRENCY = Number(process.env.BENCH_HTTP_CONCURRENCY ?? 1)
const SERVER_CLI = process.env.BENCH_SERVER_CLI === undefined ? undefined : path.resolve(process.env.BENCH_SERVER_CLI)
const ONLY = new Set((process.env.BENCH_ONLY ?? 'large,xz,small,http-large,http').split(','))
const CACHE = path.join(os.tmpdir(), 'narwhal-bench-ingest')
const CHUNK = 64 * 1024

interface Body { name: string, bytes: Buffer, narBytes: number, fileHash: string, method: Compression, narHash?: Buffer }

function sha256 (data: Uint8Array): Buffer {
  return createHash('sha256').update(data).digest()
}

function chunks (bytes: Buffer): Buffer[] {
  const out: Buffer[] = []
  for (let i = 0; i < bytes.length; i += CHUNK) out.push(bytes.subarray(i, i + CHUNK))
  return out
}

/** The NAR of `dir` compressed with `method`, built once and kept in CACHE. */
async function compressedNar (dir: string, method: Compression, level?: number): Promise<Body> {
  mkdirSync(CACHE, { recursive: true })
  const key = createHash('sha256').update(`${dir}\0${method}\0${level ?? ''}`).digest('hex').slice(0, 16)
  const file = path.join(CACHE, `${path.basename(dir)}-${key}.nar${extensionFor(method)}`)
  const sizeFile = file + '.narsize'
  if (!existsSync(sizeFile)) {
    process.stderr.write(`building ${file} (once)\n`)
    let narBytes = 0
    async function * counted (): AsyncGenerator<Buffer> {
      for await (const chunk of dumpPath(dir)) { narBytes += chunk.length; yield chunk }
    }
    await pipeline(counted, createCompressor(method, level), createWriteStream(file))
    writeFileSync(sizeFile, String(narBytes))
  }
  const bytes = readFileSync(file)
  return { name: path.basename(dir), bytes, narBytes: Number(readFileSync(sizeFile, 'utf8')), fileHash: encodeNix32(sha256(bytes)), method }
}

/** Small real files (distinct contents), each serialised alone as a NAR and zstd-compressed. */
async function smallNars (count: number): Promise<Body[]> {
  const seen = new Set<string>()
  const files: string[] = []
  function walk (dir: string): void {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      if (files.length >= count) return
      const p = path.join(dir, entry.name)
      if (entry.isDirectory()) walk(p)
      else if (entry.isFile()) {
        const size = statSync(p).size
        if (size === 0 || size > 16 * 1024) continue
        const h = sha256(readFileSync(p)).toString('hex')
        if (seen.has(h)) continue
        seen.add(h)
        files.push(p)
      }
    }
  }
  walk('/usr/share/doc')
  walk('/usr/lib/python3.11')
  const bodies: Body[] = []
  for (const file of files) {
    const nar: Buffer[] = []
    for await (const chunk of dumpPath(file)) nar.push(chunk)
    const narBytes = Buffer.concat(nar)
    const out: Buffer[] = []
    await pipeline(Readable.from([narBytes]), createCompressor('zstd'), async function (source: AsyncIterable<Buffer>) {
      for await (const chunk of source) out.push(chunk)
    })
    const bytes = Buffer.concat(out)
    bodies.push({ name: path.basename(file), bytes, narBytes: narBytes.length, fileHash: encodeNix32(sha256(bytes)), method: 'zstd', narHash: sha256(narBytes) })
  }
  return bodies
}

interface Sample { cpuMs: number, wallMs: number, answerMs?: number }

async function measure (fn: () => Promise<void>): Promise<Sample> {
  const cpu = process.cpuUsage()
  const start = process.hrtime.bigint()
  await fn()
  const wallMs = Number(process.hrtime.bigint() - start) / 1e6
  const used = process.cpuUsage(cpu)
  return { cpuMs: (used.user + used.system) / 1000, wallMs }
}

async function freshCache (): Promise<{ cache: Awaited<ReturnType<typeof openCache>>, cleanup: () => Promise<void> }> {
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'narwhal-bench-ingest-data-'))
  const cache = await openCache(loadConfig({ dataDir }, {}))
  return { cache, cleanup: async () => { await cache.close(); rmSync(dataDir, { recursive: true, force: true }) } }
}

async function storeAll (bodies: Body[]): Promise<Sample> {
  const { cache, cleanup } = await freshCache()
  try {
    return await measure(async () => {
      for (const body of bodies) {
        await storeNar(Readable.from(chunks(body.bytes)), body.fileHash, cache,
          { maxBytes: 64 * 1024 ** 3, maxNarSize: 256 * 1024 ** 3, declaredBytes: body.bytes.length, reserveBytes: 0 })
      }
    })
  } finally {
    await cleanup()
  }
}

/** CPU seconds (user + system) a process used so far, from /proc; 10 ms resolution. */
function processCpuMs (pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  // Fields 14 and 15 (utime, stime) are at 11 and 12 after the command name.
  return (Number(fields[11]) + Number(fields[12])) * 10
}

interface Reply { status: number, body: string }

function request (agent: http.Agent, url: string, method: string, headers: Record<string, string>, body?: Buffer | string,
  expectContinue = false): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, agent, headers: { ...headers, ...(expectContinue ? { expect: '100-continue' } : {}) } }, res => {
      const parts: Buffer[] = []
      res.on('data', (d: Buffer) => parts.push(d))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(parts).toString() }))
      res.on('error', reject)
    })
    req.on('error', reject)
    if (body === undefined) req.end()
    else if (expectContinue) req.on('continue', () => req.end(body))
    else req.end(body)
  })
}

/** The requests `nix copy --to` makes per path, one path at a time, against a fresh server. */
async function httpRun (bodies: Body[]): Promise<Sample> {
  const nodeOptions = process.env.BENCH_SERVER_NODE_OPTIONS
  const server = await startNarwhal(process.env, { NARWHAL_LOG_LEVEL: 'warn', ...(nodeOptions === undefined ? {} : { NODE_OPTIONS: nodeOptions }) },
    undefined, undefined, SERVER_CLI)
  const agents = Array.from({ length: HTTP_CONCURRENCY }, () => new http.Agent({ keepAlive: true, maxSockets: 1 }))
  try {
    const key = parseSecretKey(readFileSync(server.secretKey, 'utf8'))
    const auth = { authorization: 'Basic ' + Buffer.from(`bench:${server.token}`).toString('base64') }
    const paths = bodies.map((body, i) => {
      const hashPart = encodeNix32(sha256(Buffer.from(`${body.fileHash}-${i}`))).slice(0, 32)
      const storePath = `/nix/store/${hashPart}-bench-${body.name.replace(/[^0-9a-zA-Z+\-._?=]/g, '_')}`
      return { body, hashPart, storePath, narHash: body.narHash ?? Buffer.alloc(32) }
    })
    const narinfos = paths.map(p => formatNarInfo({
      storePath: p.storePath,
      url: `nar/${p.body.fileHash}.nar.zst`,
      compression: 'zstd',
      fileHash: sha256(p.body.bytes),
      fileSize: BigInt(p.body.bytes.length),
      narHash: p.narHash,
      narSize: BigInt(p.body.narBytes),
      references: [],
      sigs: [key.sign(fingerprintPath(p.storePath, p.narHash, BigInt(p.body.narBytes), []))]
    }))
    const pid = server.child.pid ?? 0
    const cpuBefore = processCpuMs(pid)
    const start = process.hrtime.bigint()
    // Each lane uploads every HTTP_CONCURRENCY-th path, one after another, on its own connection.
    await Promise.all(agents.map(async (agent, lane) => {
      for (let i = lane; i < paths.length; i += agents.length) {
        const p = paths[i]
        if (p === undefined) continue
        const narUrl = `${server.url}/nar/${p.body.fileHash}.nar.zst`
        const miss = await request(agent, `${server.url}/${p.hashPart}.narinfo`, 'GET', auth)
        const head = await request(agent, narUrl, 'HEAD', auth)
        const nar = await request(agent, narUrl, 'PUT', { ...auth, 'content-type': 'application/x-nix-nar', 'content-length': String(p.body.bytes.length) }, p.body.bytes, true)
        const info = await request(agent, `${server.url}/${p.hashPart}.narinfo`, 'PUT', { ...auth, 'content-type': 'text/x-nix-narinfo' }, narinfos[i])
        if (miss.status !== 404 || head.status !== 404 || nar.status !== 201 || info.status !== 201) {
          throw new Error(`unexpected answers ${miss.status} ${head.status} ${nar.status} ${nar.body} ${info.status} ${info.body}`)
        }
      }
    }))
    const wallMs = Number(process.hrtime.bigint() - start) / 1e6
    return { cpuMs: processCpuMs(pid) - cpuBefore, wallMs }
  } finally {
    for (const agent of agents) agent.destroy()
    const exited = once(server.child, 'exit')
    server.child.kill('SIGTERM')
    await exited
    rmSync(server.dataDir, { recursive: true, force: true })
  }
}

/** One PUT of `body` to a fresh server, written in 64 KiB pieces as a socket would carry it. */
async function httpLargeRun (body: Body): Promise<Sample> {
  const nodeOptions = process.env.BENCH_SERVER_NODE_OPTIONS
  const server = await startNarwhal(process.env, { NARWHAL_LOG_LEVEL: 'warn', ...(nodeOptions === undefined ? {} : { NODE_OPTIONS: nodeOptions }) },
    undefined, undefined, SERVER_CLI)
  try {
    const pid = server.child.pid ?? 0
    const cpuBefore = processCpuMs(pid)
    const start = process.hrtime.bigint()
    let lastByte = start
    const status = await new Promise<number>((resolve, reject) => {
      const req = http.request(`${server.url}/nar/${body.fileHash}.nar${extensionFor(body.method)}`, {
        method: 'PUT',
        headers: { authorization: `Bearer ${server.token}`, 'content-length': String(body.bytes.length), expect: '100-continue' }
      }, res => { res.resume(); res.on('end', () => resolve(res.statusCode ?? 0)) })
      req.on('error', reject)
      req.on('continue', () => {
        let at = 0
        const more = (): void => {
          while (at < body.bytes.length) {
            const ok = req.write(body.bytes.subarray(at, at + CHUNK))
            at += CHUNK
            if (!ok) { req.once('drain', more); return }
          }
          req.end(() => { lastByte = process.hrtime.bigint() })
        }
        more()
      })
    })
    if (status !== 201) throw new Error(`large NAR upload answered ${status}`)
    const end = process.hrtime.bigint()
    return { cpuMs: processCpuMs(pid) - cpuBefore, wallMs: Number(end - start) / 1e6, answerMs: Number(end - lastByte) / 1e6 }
  } finally {
    const exited = once(server.child, 'exit')
    server.child.kill('SIGTERM')
    await exited
    rmSync(server.dataDir, { recursive: true, force: true })
  }
}

interface Row {
  what: string
  unit: string
  cpu: number[]
  wall: number[]
  /** Milliseconds between the client's last byte and the answer (the large PUT over HTTP). */
  answer?: number[]
}

function fmt (n: number): string {
  return n >= 100 ? n.toFixed(0) : n >= 10 ? n.toFixed(1) : n.toFixed(2)
}

async function main (): Promise<void> {
  useScratchTmpdir('narwhal-bench-ingest')
  const rows: Row[] = []
  const large: Body[] = []
  const bigZstd = ONLY.has('large') || ONLY.has('http-large') ? await compressedNar(NAR_DIR, 'zstd') : undefined
  if (ONLY.has('large') && bigZstd !== undefined) large.push(bigZstd)
  // Preset 6 is Nix's default; the file is built once.
  if (ONLY.has('xz')) large.push(await compressedNar(XZ_DIR, 'xz', 6))
  const small = ONLY.has('small') || ONLY.has('http') ? await smallNars(SMALL) : []

  for (const body of large) {
    const mb = body.narBytes / 1e6
    const row: Row = { what: `${body.method} NAR of ${body.name}: ${fmt(mb)} MB (${fmt(body.bytes.length / 1e6)} MB ${body.method}), storeNar`, unit: 'ms per NAR MB', cpu: [], wall: [] }
    for (let i = 0; i < RUNS; i++) {
      const s = await storeAll([body])
      row.cpu.push(s.cpuMs / mb)
      row.wall.push(s.wallMs / mb)
    }
    rows.push(row)
  }
  if (ONLY.has('http-large') && bigZstd !== undefined) {
    const mb = bigZstd.narBytes / 1e6
    const row: Row = { what: `zstd NAR of ${bigZstd.name}: ${fmt(mb)} MB, one PUT over HTTP, server CPU`, unit: 'ms per NAR MB', cpu: [], wall: [], answer: [] }
    for (let i = 0; i < RUNS; i++) {
      const s = await httpLargeRun(bigZstd)
      row.cpu.push(s.cpuMs / mb)
      row.wall.push(s.wallMs / mb)
      row.answer?.push(s.answerMs ?? NaN)
    }
    rows.push(row)
  }
  if (ONLY.has('small')) {
    const row: Row = { what: `${small.length} small NARs (zstd, median NAR ${median(small.map(b => b.narBytes))} B), storeNar one at a time`, unit: 'ms per path', cpu: [], wall: [] }
    for (let i = 0; i < RUNS; i++) {
      const s = await storeAll(small)
      row.cpu.push(s.cpuMs / small.length)
      row.wall.push(s.wallMs / small.length)
    }
    rows.push(row)
  }
  if (ONLY.has('http')) {
    const row: Row = { what: `${small.length} small paths over HTTP (GET narinfo, HEAD nar, PUT nar, PUT narinfo), ${HTTP_CONCURRENCY} at a time, server CPU`, unit: 'ms per path', cpu: [], wall: [] }
    for (let i = 0; i < RUNS; i++) {
      const s = await httpRun(small)
      row.cpu.push(s.cpuMs / small.length)
      row.wall.push(s.wallMs / small.length)
    }
    rows.push(row)
  }

  process.stdout.write(`\n${os.cpus().length} cores (${os.cpus()[0]?.model ?? '?'}), Node ${process.version}, ${new Date().toISOString()}; medians of ${RUNS} runs\n\n`)
  process.stdout.write('| what | unit | CPU (median) | CPU (runs) | wall (median) | answer after the last byte, ms (runs) |\n| --- | --- | ---: | --- | ---: | --- |\n')
  for (const r of rows) {
    const answer = r.answer === undefined ? '' : `${fmt(median(r.answer))} (${r.answer.map(fmt).join(' ')})`
    process.stdout.write(`| ${r.what} | ${r.unit} | ${fmt(median(r.cpu))} | ${r.cpu.map(fmt).join(' ')} | ${fmt(median(r.wall))} | ${answer} |\n`)
  }
}

await main()
