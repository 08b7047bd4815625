/**
 * `npm run bench`: narwhal side by side with the reference setups, on loopback, in one run.
 *
 *   nginx static   the files `nix copy --to file://…` wrote, served by nginx (sendfile)
 *   nginx WebDAV   nginx accepting plain PUTs: the upload baseline, with no verification at all
 *   narwhal        `narwhal serve` as shipped, every write verified
 *
 * Prints one table of medians with the narwhal/nginx ratio and writes it to BENCHMARKS.md with
 * the date and the machine. Installs nginx, wrk and Nix from Debian when missing (as root).
 * Set BENCH_QUICK=1 for a smaller closure and shorter runs (a smoke run, not for the record),
 * BENCH_SKIP_XZ=1 to leave out the xz upload (one run of about 9 minutes per GB per server).
 */
import { execFileSync, spawnSync } from 'node:child_process'
import { mkdtempSync, writeFileSync, readFileSync } from 'node:fs'
import http from 'node:http'
import os from 'node:os'
import path from 'node:path'
import { buildBenchClosure } from './closure.js'
import { bigNarInfo, bigNarStream } from './big-nar.js'
import { resetDir, startNarwhal, startNginx } from './servers.js'
import { nixEnv, peakRssMiB, repeat, sh, timed, wrkRate, writeNetrc } from './tools.js'

const QUICK = process.env.BENCH_QUICK === '1'
const WRK_SECONDS = QUICK ? 2 : 5
const RUNS = QUICK ? 1 : 3

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

/** Downloads every URL with curl (what Nix uses), `parallel` transfers at a time; MB/s. */
async function downloadAll (urls: string[], bytes: number, parallel: number): Promise<number> {
  const config = path.join(mkdtempSync(path.join(os.tmpdir(), 'narwhal-bench-curl-')), 'urls')
  writeFileSync(config, urls.map(u => `url = "${u}"\noutput = "/dev/null"\n`).join(''))
  const seconds = await timed(async () => await sh('curl', ['-s', '-f', '-Z', '--parallel-max', String(parallel), '-K', config]))
  return bytes / 1e6 / seconds
}

async function narUrls (base: string, paths: string[]): Promise<{ urls: string[], bytes: number }> {
  const urls: string[] = []
  let bytes = 0
  for (const p of paths) {
    const text = await (await fetch(`${base}/${path.basename(p).slice(0, 32)}.narinfo`)).text()
    const url = /^URL: (.*)$/m.exec(text)?.[1]
    const size = /^FileSize: (\d+)$/m.exec(text)?.[1]
    if (url === undefined || size === undefined) throw new Error(`no URL in narinfo of ${p} at ${base}`)
    urls.push(`${base}/${url}`)
    bytes += Number(size)
  }
  return { urls, bytes }
}

function put (url: string, token: string, body: NodeJS.ReadableStream, length: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: 'PUT', headers: { authorization: `Bearer ${token}`, 'content-length': length } }, res => {
      res.resume()
      res.on('end', () => resolve(res.statusCode ?? 0))
    })
    req.on('error', reject)
    body.pipe(req)
  })
}

function get (url: string): Promise<number> {
  return new Promise((resolve, reject) => {
    http.get(url, res => { res.resume(); res.on('end', () => resolve(res.statusCode ?? 0)) }).on('error', reject)
  })
}

interface Row { what: string, how: string, nginx: number, narwhal: number, unit: string, goal: string, higherIsBetter: boolean }

function format (n: number): string {
  return n >= 100 ? Math.round(n).toLocaleString('en-US') : n.toFixed(2)
}

async function main (): Promise<void> {
  ensureTools()
  const rows: Row[] = []
  const env = nixEnv()
  console.error('building the closure (first run adds ~1 GB of real files to /nix/store)…')
  const closure = await buildBenchClosure(env, QUICK ? 150 * 1024 * 1024 : 900 * 1024 * 1024)
  console.error(`closure: ${closure.paths.length} paths, ${(closure.narBytes / 1e6).toFixed(0)} MB of NAR`)

  const nginx = await startNginx()
  const narwhal = await startNarwhal(process.env)
  try {
    const to = `${narwhal.url}?secret-key=${narwhal.secretKey}&compression=zstd`
    await sh('nix', ['copy', '--to', to, closure.top], nixEnv([`netrc-file = ${writeNetrc(narwhal.token)}`]))
    await sh('nix', ['copy', '--to', `file://${nginx.staticRoot}?secret-key=${narwhal.secretKey}&compression=zstd`, closure.top], env)

    const hit = `/${path.basename(closure.top).slice(0, 32)}.narinfo`
    const miss = '/00000000000000000000000000000000.narinfo'
    for (const [label, suffix] of [['narinfo hits', hit], ['narinfo misses (404)', miss]] as const) {
      for (const c of [1, 16, 64]) {
        const ng = await repeat(RUNS, async () => await wrkRate(nginx.staticUrl + suffix, c, WRK_SECONDS))
        const nw = await repeat(RUNS, async () => await wrkRate(narwhal.url + suffix, c, WRK_SECONDS))
        rows.push({ what: label, how: `wrk, ${c} connection${c > 1 ? 's' : ''}`, nginx: ng, narwhal: nw, unit: 'req/s', goal: '≥ 0.7', higherIsBetter: true })
      }
    }

    const ngNars = await narUrls(nginx.staticUrl, closure.paths)
    const nwNars = await narUrls(narwhal.url, closure.paths)
    for (const parallel of [1, 16]) {
      const ng = await repeat(RUNS, async () => await downloadAll(ngNars.urls, ngNars.bytes, parallel))
      const nw = await repeat(RUNS, async () => await downloadAll(nwNars.urls, nwNars.bytes, parallel))
      rows.push({ what: 'NAR download', how: `whole closure, curl, ${parallel} at a time`, nginx: ng, narwhal: nw, unit: 'MB/s', goal: '≥ 0.9', higherIsBetter: true })
    }

    const substitute = async (url: string): Promise<number> => {
      const store = mkdtempSync(path.join(os.tmpdir(), 'narwhal-bench-store-'))
      const seconds = await timed(async () => await sh('nix', ['copy', '--from', url, '--to', store, closure.top], nixEnv([`trusted-public-keys = ${narwhal.publicKey}`])))
      await sh('rm', ['-rf', store])
      return seconds
    }
    rows.push({ what: 'substitution', how: 'nix copy --from into an empty store', nginx: await repeat(RUNS, async () => await substitute(nginx.staticUrl)), narwhal: await repeat(RUNS, async () => await substitute(narwhal.url)), unit: 's', goal: '≤ 1.1', higherIsBetter: false })

    // xz takes Nix about 9 minutes per GB here, so it runs once and BENCH_SKIP_XZ=1 leaves it out.
    const skipXz = QUICK || process.env.BENCH_SKIP_XZ === '1'
    for (const compression of skipXz ? ['zstd'] : ['zstd', 'xz']) {
      const runs = compression === 'xz' ? 1 : RUNS
      const ng = await repeat(runs, async () => {
        await resetDir(nginx.davRoot)
        return await timed(async () => await sh('nix', ['copy', '--to', `${nginx.davUrl}?secret-key=${narwhal.secretKey}&compression=${compression}`, closure.top], nixEnv()))
      })
      const nw = await repeat(runs, async () => {
        const fresh = await startNarwhal(process.env)
        try {
          return await timed(async () => await sh('nix', ['copy', '--to', `${fresh.url}?secret-key=${fresh.secretKey}&compression=${compression}`, closure.top], nixEnv([`netrc-file = ${writeNetrc(fresh.token)}`])))
        } finally {
          fresh.child.kill('SIGTERM')
        }
      })
      rows.push({ what: 'upload', how: `nix copy --to, ${compression}${runs === 1 ? ' (1 run)' : ''}`, nginx: ng, narwhal: nw, unit: 's', goal: '≤ 1.1', higherIsBetter: false })
    }

    if (!QUICK) {
      const size = 4 * 1024 ** 3 + 300 * 1024 ** 2
      console.error('memory: generating two 4.3 GiB NARs…')
      const a = bigNarInfo(size, 0)
      const b = bigNarInfo(size, 1)
      const putStatus = await put(`${narwhal.url}/nar/${a.fileHash}.nar`, narwhal.token, bigNarStream(size, 0), a.length)
      if (putStatus !== 201) throw new Error(`big NAR upload answered ${putStatus}`)
      const [up, down] = await Promise.all([
        put(`${narwhal.url}/nar/${b.fileHash}.nar`, narwhal.token, bigNarStream(size, 1), b.length),
        get(`${narwhal.url}/nar/${a.fileHash}.nar`)
      ])
      if (up !== 201 || down !== 200) throw new Error(`big NAR transfer answered ${up}/${down}`)
      const pid = narwhal.child.pid ?? 0
      rows.push({ what: 'memory', how: 'peak server RSS, 4.3 GiB NAR up while another comes down', nginx: NaN, narwhal: peakRssMiB(pid), unit: 'MiB', goal: '≤ 200 MiB', higherIsBetter: false })
    }
  } finally {
    narwhal.child.kill('SIGTERM')
    nginx.child.kill('SIGTERM')
  }

  const cpu = (/model name\s*:\s*(.*)/.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? 'unknown CPU').trim()
  const machine = `${os.cpus().length} cores (${cpu}), ${(os.totalmem() / 1024 ** 3).toFixed(0)} GiB RAM, Node ${process.version}, ${spawnSync('nginx', ['-v']).stderr.toString().trim().replace('nginx version: ', '')}`
  const lines = [
    `Measured ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC on ${machine}; loopback; ` +
      `closure of ${closure.paths.length} paths, ${(closure.narBytes / 1e6).toFixed(0)} MB of NAR (zstd); medians of ${RUNS} run${RUNS > 1 ? 's' : ''}${QUICK ? ' (BENCH_QUICK)' : ''}.`,
    '',
    '| what | how | nginx | narwhal | unit | narwhal/nginx | goal |',
    '| --- | --- | ---: | ---: | --- | ---: | --- |',
    ...rows.map(r => {
      const ratio = Number.isNaN(r.nginx) ? '' : (r.narwhal / r.nginx).toFixed(2)
      return `| ${r.what} | ${r.how} | ${Number.isNaN(r.nginx) ? '–' : format(r.nginx)} | ${format(r.narwhal)} | ${r.unit} | ${ratio} | ${r.goal} |`
    })
  ]
  const table = lines.join('\n')
  console.log(table)
  if (!QUICK) {
    const file = 'BENCHMARKS.md'
    const header = '# Benchmarks\n\nProduced by `npm run bench` (bench/run.ts). Newest run first; the notes below the tables say what bounds each figure.\n\n'
    let previous = ''
    try { previous = readFileSync(file, 'utf8').replace(header, '') } catch {}
    writeFileSync(file, header + '## Run\n\n' + table + '\n\n' + previous)
  }
}

main().catch((err: unknown) => {
  console.error(err)
  process.exitCode = 1
})
