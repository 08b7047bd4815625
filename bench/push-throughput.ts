/**
 * Push throughput: `narwhal push` versus `nix copy --to http://…` uploading the same closure of
 * real files (Python, Perl and the largest libraries of /usr/lib, added with `nix-store --add`,
 * plus a chain of small derivations referencing them: a few large paths, many small ones) to a
 * fresh narwhal server each time, so every path is uploaded.
 *
 *   node dist/bench/push-throughput.js          (BENCH_QUICK=1: a smaller closure, one run;
 *                                                BENCH_SKIP_XZ=1: without nix copy's xz)
 *
 * `nix copy` is measured with its default compression (xz) and with zstd, narwhal push with its
 * default (zstd). Prints a table of medians; never asserts on time.
 */
import { mkdtempSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { buildBenchClosure } from './closure.js'
import { startNarwhal } from './servers.js'
import { median, nixEnv, sh, timed, useScratchTmpdir, writeNetrc } from './tools.js'

const QUICK = process.env.BENCH_QUICK === '1'
const RUNS = QUICK ? 1 : 3
// nix copy's xz takes about 10 minutes per GB on a 2-core machine; BENCH_SKIP_XZ=1 leaves it out.
const SKIP_XZ = process.env.BENCH_SKIP_XZ === '1'
const CLI = path.resolve('dist/src/cli/main.js')

interface Row { name: string, seconds: number }

async function main (): Promise<void> {
  useScratchTmpdir('narwhal-bench-push')
  const env = nixEnv()
  const closure = await buildBenchClosure(env, (QUICK ? 150 : 500) * 1024 * 1024)
  process.stderr.write(`closure: ${closure.paths.length} paths, ${(closure.narBytes / 1e6).toFixed(0)} MB of NAR\n`)

  const tools: Array<{ name: string, run: (server: Awaited<ReturnType<typeof startNarwhal>>) => Promise<void> }> = [
    {
      name: 'narwhal push (zstd)',
      run: async (server) => {
        const tokenFile = path.join(mkdtempSync(path.join(os.tmpdir(), 'narwhal-bench-token-')), 'token')
        writeFileSync(tokenFile, server.token, { mode: 0o600 })
        await sh('node', [CLI, 'push', closure.top], {
          ...env, NARWHAL_SERVER: server.url, NARWHAL_TOKEN_FILE: tokenFile, NARWHAL_SECRET_KEY_FILES: server.secretKey
        })
      }
    },
    ...(SKIP_XZ ? ['zstd'] as const : ['xz', 'zstd'] as const).map(compression => ({
      name: `nix copy --to http:// (${compression})`,
      run: async (server: Awaited<ReturnType<typeof startNarwhal>>) => {
        await sh('nix', ['copy', '--to', `${server.url}?secret-key=${server.secretKey}&compression=${compression}`, closure.top],
          nixEnv([`netrc-file = ${writeNetrc(server.token)}`]))
      }
    }))
  ]

  const rows: Row[] = []
  for (const tool of tools) {
    const times: number[] = []
    for (let i = 0; i < RUNS; i++) {
      const server = await startNarwhal(env, { NARWHAL_LOG_LEVEL: 'warn' })
      try {
        times.push(await timed(() => tool.run(server)))
        const stored = await fetch(`${server.url}/${path.basename(closure.top).slice(0, 32)}.narinfo`)
        if (!stored.ok) throw new Error(`${tool.name} did not upload the top path`)
      } finally {
        server.child.kill()
      }
    }
    rows.push({ name: tool.name, seconds: median(times) })
    process.stderr.write(`${tool.name}: ${times.map(t => t.toFixed(1)).join(', ')} s\n`)
  }
  const baseRow = rows.find(r => r.name.includes('(xz)')) ?? rows.find(r => r.name.includes('nix copy'))
  const base = baseRow?.seconds ?? NaN
  const mb = closure.narBytes / 1e6
  const lines = [
    `Push throughput: ${closure.paths.length} paths, ${mb.toFixed(0)} MB of NAR, fresh narwhal server per run, median of ${RUNS}`,
    '',
    `| tool | seconds | NAR MB/s | speed vs ${baseRow?.name ?? 'nix copy'} |`,
    '| --- | ---: | ---: | ---: |',
    ...rows.map(r => `| ${r.name} | ${r.seconds.toFixed(1)} | ${(mb / r.seconds).toFixed(1)} | ${(base / r.seconds).toFixed(2)}× |`)
  ]
  process.stdout.write(lines.join('\n') + '\n')
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? err.stack ?? err.message : String(err)}\n`)
  process.exitCode = 1
})
