/**
 * One NAR at a time through a cold and a warm narwhal and directly from nginx, timed with curl:
 * how fast narwhal relays a pulled NAR with nothing else running (a look at the cold path's
 * throughput alone, without a Nix client's own work beside it).
 */
import { mkdtempSync, readFileSync, readdirSync, statSync } from 'node:fs'
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
    const picks = [...narinfos.slice(0, 6), ...narinfos.slice(40, 44), ...narinfos.slice(-4)]
    const get = async (url: string): Promise<number> => await timed(async () => await sh('curl', ['-sf', '-o', '/dev/null', url]))
    const port = await freePort()
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
    } finally { child.kill('SIGTERM') }
  } finally { nginx.child.kill('SIGTERM') }
}

main().catch((err: unknown) => { console.error(err); process.exitCode = 1 })
