/**
 * Pulled NARs one at a time, with nothing else running: the cold path's throughput and latency
 * without a Nix client's own work beside it.
 *
 *   the largest NARs (PROBE_BIG, 6 by default): from nginx, through a cold and a warm narwhal,
 *     timed with curl
 *   200 small paths one after the other (narinfo, then NAR, as Nix walks a chain of derivations):
 *     from nginx and through a cold narwhal, and with BENCH_BASELINE_CLI through another build's
 *     too, path by path in turn; medians and sums of the requests' times
 */
import { mkdtempSync, readFileSync, readdirSync, statSync } from 'node:fs'
import type { ChildProcess } from 'node:child_process'
import os from 'node:os'
import path from 'node:path'
import { buildBenchClosure } from './closure.js'
import { startNginx } from './servers.js'
import { freePort, median, nixEnv, sh, startProcess, timed, useScratchTmpdir } from './tools.js'

const CLI = path.resolve('dist/src/cli/main.js')

async function main (): Promise<void> {
  useScratchTmpdir('narwhal-bench-probe')
  const env = nixEnv()
  const closure = await buildBenchClosure(env)
  const keyDir = mkdtempSync(path.join(os.tmpdir(), 'key-'))
  await sh('nix-store', ['--generate-binary-cache-key', 'bench-upstream-1', path.join(keyDir, 's'), path.join(keyDir, 'p')])
  const publicKey = readFileSync(path.join(keyDir, 'p'), 'utf8').trim()
  const nginx = await startNginx()
  try {
    await sh('nix', ['copy', '--to', `file://${nginx.staticRoot}?secret-key=${path.join(keyDir, 's')}&compression=zstd`, closure.top], env)
    const narinfos = readdirSync(nginx.staticRoot).filter(f => f.endsWith('.narinfo')).map(f => {
      const text = readFileSync(path.join(nginx.staticRoot, f), 'utf8')
      const url = /^URL: (.*)$/m.exec(text)?.[1] ?? ''
      return { hash: f.slice(0, 32), url, size: statSync(path.join(nginx.staticRoot, url)).size }
    }).sort((a, b) => b.size - a.size)
    const picks = narinfos.slice(0, Number(process.env.PROBE_BIG ?? 6))
    const small = narinfos.filter(n => n.size < 4096).slice(0, 200)
    const get = async (url: string): Promise<number> => await timed(async () => await sh('curl', ['-sf', '-o', '/dev/null', url]))
    const port = await freePort()
    const others: ChildProcess[] = []
    const url = `http://127.0.0.1:${port}`
    const dataDir = mkdtempSync(path.join(os.tmpdir(), 'data-'))
    const child = await startProcess('node', [CLI, 'serve', '--data', dataDir, '--listen', `127.0.0.1:${port}`,
      '--upstream', nginx.staticUrl, '--upstream-key', publicKey], process.env, async () => (await fetch(`${url}/nix-cache-info`)).ok)
    try {
      for (const p of picks) {
        const direct = await get(`${nginx.staticUrl}/${p.url}`)
        await sh('curl', ['-sf', '-o', '/dev/null', `${url}/${p.hash}.narinfo`])
        const cold = await get(`${url}/${p.url}`)
        const warm = median([await get(`${url}/${p.url}`), await get(`${url}/${p.url}`), await get(`${url}/${p.url}`)])
        console.log(`${(p.size / 1e6).toFixed(2)} MB: nginx ${(direct * 1000).toFixed(1)} ms, cold ${(cold * 1000).toFixed(1)} ms, warm ${(warm * 1000).toFixed(1)} ms`)
      }
      // Small paths one after the other, narinfo then NAR, as Nix walks a chain of derivations;
      // with BENCH_BASELINE_CLI, through another build too, path by path in turn.
      const ms = async (u: string): Promise<number> => {
        const t = performance.now()
        const r = await fetch(u)
        await r.arrayBuffer()
        if (!r.ok) throw new Error(`${u}: ${r.status}`)
        return performance.now() - t
      }
      const servers: Array<[string, string]> = [['nginx', nginx.staticUrl], ['cold', url]]
      if (process.env.BENCH_BASELINE_CLI !== undefined) {
        const basePort = await freePort()
        const baseDir = mkdtempSync(path.join(os.tmpdir(), 'data-'))
        others.push(await startProcess('node', [path.resolve(process.env.BENCH_BASELINE_CLI), 'serve', '--data', baseDir, '--listen', `127.0.0.1:${basePort}`,
          '--upstream', nginx.staticUrl, '--upstream-key', publicKey], process.env, async () => (await fetch(`http://127.0.0.1:${basePort}/nix-cache-info`)).ok))
        servers.push(['baseline cold', `http://127.0.0.1:${basePort}`])
      }
      const lat = new Map(servers.map(([label]) => [label, { narinfo: [] as number[], nar: [] as number[] }]))
      for (const [i, p] of small.entries()) {
        for (const [label, base] of i % 2 === 0 ? servers : [...servers].reverse()) {
          lat.get(label)?.narinfo.push(await ms(`${base}/${p.hash}.narinfo`))
          lat.get(label)?.nar.push(await ms(`${base}/${p.url}`))
        }
      }
      for (const [label, l] of lat) {
        console.log(`${small.length} small paths, ${label}: narinfo median ${median(l.narinfo).toFixed(2)} ms, NAR median ${median(l.nar).toFixed(2)} ms, NAR sum ${l.nar.reduce((a, b) => a + b, 0).toFixed(0)} ms`)
      }
    } finally {
      child.kill('SIGTERM')
      for (const o of others) o.kill('SIGTERM')
    }
  } finally { nginx.child.kill('SIGTERM') }
}

main().catch((err: unknown) => { console.error(err); process.exitCode = 1 })
