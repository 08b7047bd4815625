/**
 * `npm run bench`: narwhal side by side with the reference setups, on loopback, in one run.
 *
 *   nginx static   the files `nix copy --to file://…` wrote, served by nginx (sendfile)
 *   nginx WebDAV   nginx accepting plain PUTs: the upload baseline, with no verification at all
 *   narwhal        `narwhal serve` as shipped, every write verified
 *
 * Prints one table of medians with the narwhal/nginx ratio and writes it to BENCHMARKS.md with
 * the date and the machine. Installs nginx, wrk and Nix from Debian when missing (as root).
 * narwhal runs twice over one data folder: as one process (the default) and with BENCH_WORKERS
 * processes (`--workers`; default one per core, at most 8). A bare node:http server with as many
 * processes answers narinfo requests from memory and NAR downloads with narwhal's read loop beside
 * them, and another stores uploads as nginx's WebDAV does: the floor for Node on this machine.
 * Contenders take turns within each measurement, so a drift in the machine's load hits all.
 *
 * The upload and substitution rows run once with each Nix client, Debian bookworm's 2.8 on the
 * host and trixie's 2.26 in the root scripts/nix-2.26-root.sh makes (docs/nix-clients.md).
 *
 * Set BENCH_QUICK=1 for a smaller closure and shorter runs (a smoke run, not for the record),
 * BENCH_SKIP_XZ=1 to leave out the xz upload (one run of about 9 minutes per GB per server).
 */
import { execFileSync, type ChildProcess } from 'node:child_process'
import { mkdtempSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { buildBenchClosure } from './closure.js'
import { bigNarInfo, bigNarStream } from './big-nar.js'
import { resetDir, startNarwhal, startNginx } from './servers.js'
import { downloadAll, get, narUrls, put, uploadToFresh } from './transfers.js'
import { alternate, BENCH_CLIENTS, benchWorkers, freePort, machine, nixEnv, peakRssTreeMiB, prepareNix226Root, prependToBenchmarks, sampledPeakMemoryTreeMiB, sh, startProcess, timed, TRIXIE_NIX, useScratchTmpdir, writeNetrc, wrkRate } from './tools.js'
import { runVersus } from './versus.js'

const QUICK = process.env.BENCH_QUICK === '1'
const WRK_SECONDS = QUICK ? 2 : 5
const RUNS = QUICK ? 1 : 3
/**
 * Substitution is the goal closest to its line (≤ 1.1), and one run of it moved by 10-20% between
 * rounds on this machine: five rounds for its median (about a minute more).
 */
const SUBSTITUTION_RUNS = QUICK ? 1 : 5

function ensureTools (): void {
  const missing = ['nginx', 'wrk', 'nix', 'curl'].filter(t => {
    try { execFileSync('sh', ['-c', `command -v ${t}`]); return false } catch { return true }
  })
  if (missing.length === 0) return
  if (process.getuid?.() !== 0) throw new Error(`bench needs ${missing.join(', ')}; install them (apt-get install nginx wrk nix-bin curl) or run as root`)
  const packages = missing.map(t => t === 'nix' ? 'nix-bin' : t)
  execFileSync('apt-get', ['update', '-qq'], { stdio: 'inherit' })
  execFileSync('apt-get', ['install', '-y', '-qq', ...packages], { stdio: 'inherit', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } })
}

interface Row {
  what: string
  how: string
  nginx: number
  /** narwhal as one process (workers: 1, the default), and with WORKERS processes. */
  single: number
  workers: number
  /**
   * The bare Node floor: for requests and downloads a node:http server with WORKERS processes
   * (floor-server.ts), for the zstd upload one that stores PUTs like nginx's WebDAV (floor-dav.ts).
   */
  floor?: number
  unit: string
  goal: string
}

function format (n: number): string {
  if (Number.isNaN(n)) return '–'
  return n >= 100 ? Math.round(n).toLocaleString('en-US') : n.toFixed(2)
}

function ratio (value: number, nginx: number): string {
  return Number.isNaN(nginx) || Number.isNaN(value) ? '' : (value / nginx).toFixed(2)
}

async function startFloor (port: number, workers: number, narinfoFile: string, hashPart: string, staticRoot: string): Promise<ChildProcess> {
  return await startProcess('node', [path.resolve('dist/bench/floor-server.js'), String(port), String(workers), narinfoFile, hashPart, staticRoot],
    process.env, async () => (await fetch(`http://127.0.0.1:${port}/${hashPart}.narinfo`)).ok)
}

async function main (): Promise<void> {
  const args = process.argv.slice(2)
  if (args[0] === '--baseline') {
    if (args[1] === undefined || args.length > 2) throw new Error('usage: npm run bench -- --baseline <git commit>')
    ensureTools()
    await runVersus(args[1])
    return
  }
  if (args.length > 0) throw new Error(`unknown arguments ${args.join(' ')}; usage: npm run bench [-- --baseline <git commit>]`)
  useScratchTmpdir('narwhal-bench')
  ensureTools()
  await prepareNix226Root()
  const rows: Row[] = []
  const env = nixEnv()
  const workers = benchWorkers()
  console.error('building the closure (first run adds ~1 GB of real files to /nix/store)…')
  const closure = await buildBenchClosure(env, QUICK ? 150 * 1024 * 1024 : 900 * 1024 * 1024)
  console.error(`closure: ${closure.paths.length} paths, ${(closure.narBytes / 1e6).toFixed(0)} MB of NAR`)

  const nginx = await startNginx()
  const single = await startNarwhal(process.env, { NARWHAL_WORKERS: '1' })
  // The same data folder, served by a second narwhal with several processes.
  const multi = await startNarwhal(process.env, { NARWHAL_WORKERS: String(workers) }, undefined, single)
  const children: ChildProcess[] = [nginx.child, single.child, multi.child]
  try {
    const to = `${single.url}?secret-key=${single.secretKey}&compression=zstd`
    await sh('nix', ['copy', '--to', to, closure.top], nixEnv([`netrc-file = ${writeNetrc(single.token)}`]))
    await sh('nix', ['copy', '--to', `file://${nginx.staticRoot}?secret-key=${single.secretKey}&compression=zstd`, closure.top], env)

    const hashPart = path.basename(closure.top).slice(0, 32)
    const narinfoFile = path.join(mkdtempSync(path.join(os.tmpdir(), 'narwhal-bench-floor-')), 'hit.narinfo')
    writeFileSync(narinfoFile, Buffer.from(await (await fetch(`${single.url}/${hashPart}.narinfo`)).arrayBuffer()))
    const floorPort = await freePort()
    children.push(await startFloor(floorPort, workers, narinfoFile, hashPart, nginx.staticRoot))
    const floorUrl = `http://127.0.0.1:${floorPort}`
    const floorDavRoot = mkdtempSync(path.join(os.tmpdir(), 'narwhal-bench-floor-dav-'))
    const floorDavPort = await freePort()
    children.push(await startProcess('node', [path.resolve('dist/bench/floor-dav.js'), String(floorDavPort), floorDavRoot], process.env,
      async () => (await fetch(`http://127.0.0.1:${floorDavPort}/nix-cache-info`)).status === 404))
    const floorDavUrl = `http://127.0.0.1:${floorDavPort}`

    const hit = `/${hashPart}.narinfo`
    const miss = '/00000000000000000000000000000000.narinfo'
    for (const [label, suffix] of [['narinfo hits', hit], ['narinfo misses (404)', miss]] as const) {
      for (const c of [1, 16, 64]) {
        const [ng, one, many, floor] = await alternate(RUNS, [nginx.staticUrl, single.url, multi.url, floorUrl]
          .map(base => async () => await wrkRate(base + suffix, c, WRK_SECONDS)))
        rows.push({ what: label, how: `wrk, ${c} connection${c > 1 ? 's' : ''}`, nginx: ng ?? NaN, single: one ?? NaN, workers: many ?? NaN, floor, unit: 'req/s', goal: '≥ 0.7' })
      }
    }

    const ngNars = await narUrls(nginx.staticUrl, closure.paths)
    const oneNars = await narUrls(single.url, closure.paths)
    const manyNars = await narUrls(multi.url, closure.paths)
    // The floor serves the files nginx serves, under the same names.
    const floorNars = { urls: ngNars.urls.map(u => floorUrl + u.slice(nginx.staticUrl.length)), bytes: ngNars.bytes }
    for (const parallel of [1, 16]) {
      const [ng, one, many, floor] = await alternate(RUNS, [ngNars, oneNars, manyNars, floorNars].map(n => async () => await downloadAll(n.urls, n.bytes, parallel)))
      rows.push({ what: 'NAR download', how: `whole closure, curl, ${parallel} at a time`, nginx: ng ?? NaN, single: one ?? NaN, workers: many ?? NaN, floor, unit: 'MB/s', goal: '≥ 0.9' })
    }

    // The closure into the Nix 2.26 root's own store, substituted from narwhal (a no-op the next time).
    await TRIXIE_NIX.nix(['copy', '--from', single.url, closure.top], nixEnv([`trusted-public-keys = ${single.publicKey}`]))

    for (const client of BENCH_CLIENTS) {
      const substitute = async (url: string): Promise<number> => {
        const store = mkdtempSync(path.join(os.tmpdir(), 'narwhal-bench-store-'))
        const seconds = await timed(async () => await client.nix(['copy', '--from', url, '--to', store, closure.top], nixEnv([`trusted-public-keys = ${single.publicKey}`])))
        await sh('rm', ['-rf', store])
        return seconds
      }
      const [ngSub, oneSub, manySub] = await alternate(SUBSTITUTION_RUNS, [nginx.staticUrl, single.url, multi.url].map(url => async () => await substitute(url)))
      rows.push({ what: 'substitution', how: `${client.label}: nix copy --from into an empty store`, nginx: ngSub ?? NaN, single: oneSub ?? NaN, workers: manySub ?? NaN, unit: 's', goal: '≤ 1.1' })
    }

    // xz takes Nix about 9 minutes per GB here, so it runs once and BENCH_SKIP_XZ=1 leaves it out.
    const skipXz = QUICK || process.env.BENCH_SKIP_XZ === '1'
    for (const compression of skipXz ? ['zstd'] : ['zstd', 'xz']) {
      for (const client of BENCH_CLIENTS) {
        const runs = compression === 'xz' ? 1 : RUNS
        // A server that stores PUTs as files (nginx's WebDAV, the floor): emptied, then pushed to.
        const plainPut = (url: string, root: string) => async (): Promise<number> => {
          await resetDir(root)
          return await timed(async () => await client.nix(['copy', '--to', `${url}?secret-key=${single.secretKey}&compression=${compression}`, closure.top], nixEnv()))
        }
        // The floor only beside zstd: with xz, Nix's compressing is nearly all of the time.
        const [ng, one, many, floor] = await alternate(runs, [plainPut(nginx.davUrl, nginx.davRoot), async () => await uploadToFresh(client, 1, closure.top, compression),
          async () => await uploadToFresh(client, workers, closure.top, compression), ...(compression === 'zstd' ? [plainPut(floorDavUrl, floorDavRoot)] : [])])
        rows.push({ what: 'upload', how: `${client.label}: nix copy --to, ${compression}${runs === 1 ? ' (1 run)' : ''}`, nginx: ng ?? NaN, single: one ?? NaN, workers: many ?? NaN, floor, unit: 's', goal: '≤ 1.1' })
      }
    }

    if (!QUICK) {
      const size = 4 * 1024 ** 3 + 300 * 1024 ** 2
      console.error('memory: two 4.3 GiB NARs through each narwhal…')
      const peaks: number[] = []
      const transferPeaks: number[] = []
      const transferPss: number[] = []
      for (const [i, server] of [single, multi].entries()) {
        // Fresh NAR names per server: the two share a data folder.
        const a = bigNarInfo(size, 2 * i)
        const b = bigNarInfo(size, 2 * i + 1)
        const putStatus = await put(`${server.url}/nar/${a.fileHash}.nar`, server.token, bigNarStream(size, 2 * i), a.length)
        if (putStatus !== 201) throw new Error(`big NAR upload answered ${putStatus}`)
        const transfer = Promise.all([
          put(`${server.url}/nar/${b.fileHash}.nar`, server.token, bigNarStream(size, 2 * i + 1), b.length),
          get(`${server.url}/nar/${a.fileHash}.nar`)
        ])
        const { result: [up, down], peakRssMiB, peakPssMiB } = await sampledPeakMemoryTreeMiB(server.child.pid ?? 0, transfer)
        if (up !== 201 || down !== 200) throw new Error(`big NAR transfer answered ${up}/${down}`)
        transferPeaks.push(peakRssMiB)
        transferPss.push(peakPssMiB)
        peaks.push(peakRssTreeMiB(server.child.pid ?? 0))
      }
      rows.push({ what: 'memory', how: 'RSS of the server\'s processes (summed, sampled every 20 ms) while a 4.3 GiB NAR goes up and another comes down, peak', nginx: NaN, single: transferPeaks[0] ?? NaN, workers: transferPeaks[1] ?? NaN, unit: 'MiB', goal: '≤ 200 MiB' })
      rows.push({ what: 'memory', how: 'the same as PSS (pages the processes share, such as Node\'s code, counted once), peak', nginx: NaN, single: transferPss[0] ?? NaN, workers: transferPss[1] ?? NaN, unit: 'MiB', goal: '≤ 200 MiB' })
      rows.push({ what: 'memory', how: 'peak RSS of each of the server\'s processes over the whole run (wrk load included), summed', nginx: NaN, single: peaks[0] ?? NaN, workers: peaks[1] ?? NaN, unit: 'MiB', goal: '≤ 200 MiB' })
    }
  } finally {
    for (const child of children) child.kill('SIGTERM')
  }

  const hasFloor = rows.some(r => r.floor !== undefined)
  const lines = [
    `Measured ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC on ${machine()}; loopback; load average ${os.loadavg()[0]?.toFixed(1)} at the end; ` +
      `closure of ${closure.paths.length} paths, ${(closure.narBytes / 1e6).toFixed(0)} MB of NAR (zstd); medians of ${RUNS} run${RUNS > 1 ? 's' : ''} (substitution ${SUBSTITUTION_RUNS}), contenders taking turns${QUICK ? ' (BENCH_QUICK)' : ''}. ` +
      `"1 process" is narwhal's default (workers: 1); "${workers} workers" is \`--workers ${workers}\`` +
      (hasFloor ? `; "bare Node" is a plain node:http server with ${workers} processes answering narinfos from memory and NARs with narwhal's read loop (bench/floor-server.ts), and for uploads one process storing PUTs as nginx's WebDAV does, unchecked and unsynced (bench/floor-dav.ts): the floor for Node here.` : '.'),
    '',
    `| what | how | nginx | narwhal, 1 process | narwhal, ${workers} workers | ratio, 1 process | ratio, ${workers} workers | goal | bare Node (ratio) |`,
    '| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: |',
    ...rows.map(r => `| ${r.what} | ${r.how} | ${format(r.nginx)} | ${format(r.single)} | ${format(r.workers)} | ${ratio(r.single, r.nginx)} | ` +
      `${ratio(r.workers, r.nginx)} | ${r.goal} | ${r.floor === undefined ? '' : `${format(r.floor)} (${ratio(r.floor, r.nginx)})`} |`)
  ]
  const table = lines.join('\n')
  console.log(table)
  if (!QUICK) {
    prependToBenchmarks('## Run\n\n' + table)
  }
}

main().catch((err: unknown) => {
  console.error(err)
  process.exitCode = 1
})
