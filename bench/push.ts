/**
 * `npm run bench:push` (issue 18): the sidecar's upload against the naive one it replaces, side by
 * side in one run, rounds alternated, medians.
 *
 *   WebDAV         `nix copy --to` nginx's WebDAV (zstd): plain PUTs, nothing checked or synced
 *   narwhal push   `narwhal push` of the closure to a fresh narwhal: zstd level 3 (the default),
 *                  level 1, and uncompressed (`compression: none`)
 *   nix copy       `nix copy --to` a fresh narwhal (zstd), Nix 2.8 from the host, and with
 *                  BENCH_NIX226=1 Nix 2.26 through scripts/nix-2.26-root.sh (the modern-Nix issue;
 *                  BENCH_NIX226_SCRIPT names another copy of that script)
 *   queue drain    200 builds recorded by bin/narwhal-hook while no pusher runs, then `narwhal
 *                  pusher` started: the time until `narwhal queue wait` returns and the requests the
 *                  server saw, against one `narwhal push` of the same 200 paths
 *
 * BENCH_PUSH_ROWS=copy runs only the `nix copy` rows and their WebDAV rows (the server side's
 * measure); BENCH_PUSH_ROWS=push only the `narwhal push` rows of the closure and the WebDAV rows. With BENCH_NIX226=1 WebDAV is also pushed to by Nix 2.26, and each `nix copy` row is
 * compared to its own client's WebDAV time.
 *
 * BENCH_BASELINE_SERVER=DIR adds the `nix copy` rows against the server of another build (a
 * checkout with dist/ built): the server side before and after a change, in one run.
 *
 * BENCH_BASELINE=DIR adds the push and the drain with the pusher of another build (a checkout
 * with dist/ built), against this build's server: before and after a change, in one run.
 *
 * The closure is bench/closure.ts buildPushClosure's (about 155 paths, 315 MiB of NAR). CPU
 * seconds per GiB of NAR: the client's (with its children: `nix-store --dump`, zstd threads) from
 * /usr/bin/time, the server's from /proc. Bytes stored: the NAR files the server (or WebDAV's
 * folder) holds after the push. BENCH_RUNS rounds (default 3); prints a table, never asserts on time.
 */
import { spawn } from 'node:child_process'
import { mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { buildPushClosure, chainExpression } from './closure.js'
import { resetDir, startNarwhal, startNginx, type Narwhal } from './servers.js'
import { median, nixEnv, processTree, sh, useScratchTmpdir, writeNetrc } from './tools.js'

const RUNS = Number(process.env.BENCH_RUNS ?? '3')
const CLI = path.resolve('dist/src/cli/main.js')
const BASELINE = process.env.BENCH_BASELINE === undefined ? undefined : path.resolve(process.env.BENCH_BASELINE, 'dist/src/cli/main.js')
const BASELINE_SERVER = process.env.BENCH_BASELINE_SERVER === undefined ? undefined : path.resolve(process.env.BENCH_BASELINE_SERVER, 'dist/src/cli/main.js')
const HOOK = path.resolve('bin/narwhal-hook')
const DRAIN_BUILDS = 200
const WITH_226 = process.env.BENCH_NIX226 === '1'
const NIX226_SCRIPT = path.resolve(process.env.BENCH_NIX226_SCRIPT ?? 'scripts/nix-2.26-root.sh')
const CLK_TCK = 100
const ONLY_ROWS = process.env.BENCH_PUSH_ROWS

/** A measured command: wall seconds, and the CPU seconds of it and its children. */
interface Timed { seconds: number, cpu: number }

/** Runs a command under /usr/bin/time; rejects on a non-zero exit. */
async function timedCommand (file: string, args: string[], env: NodeJS.ProcessEnv): Promise<Timed> {
  const out = path.join(mkdtempSync(path.join(os.tmpdir(), 'narwhal-bench-time-')), 'time')
  const start = process.hrtime.bigint()
  await new Promise<void>((resolve, reject) => {
    const child = spawn('/usr/bin/time', ['-f', '%U %S', '-o', out, file, ...args], { env, stdio: ['ignore', 'ignore', 'pipe'] })
    let stderr = ''
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
    child.on('error', reject)
    child.on('close', code => code === 0 ? resolve() : reject(new Error(`${file} ${args.slice(0, 4).join(' ')}… exited ${code}: ${stderr.slice(-2000)}`)))
  })
  const seconds = Number(process.hrtime.bigint() - start) / 1e9
  const [user, system] = readFileSync(out, 'utf8').trim().split('\n').pop()?.split(' ').map(Number) ?? []
  return { seconds, cpu: (user ?? NaN) + (system ?? NaN) }
}

/** CPU seconds used so far by a process and its children that are still running (from /proc). */
function cpuSeconds (pid: number): number {
  let ticks = 0
  for (const p of processTree(pid)) {
    try {
      const fields = readFileSync(`/proc/${p}/stat`, 'utf8').replace(/^.*\) /, '').split(' ')
      // utime and stime: fields 14 and 15 of stat, 12 and 13 after the command's name.
      ticks += Number(fields[11]) + Number(fields[12])
    } catch {}
  }
  return ticks / CLK_TCK
}

/** Requests the server counted, from /metrics (the scrape itself not included). */
async function requestsSeen (server: Narwhal): Promise<number> {
  const text = await (await fetch(`${server.url}/metrics`, { headers: { authorization: `Bearer ${server.token}` } })).text()
  let n = 0
  for (const m of text.matchAll(/^narwhal_http_requests_total\{[^}]*\} (\d+)/gm)) n += Number(m[1])
  return n
}

interface Sample extends Timed { serverCpu: number, requests: number, storedBytes: number }

/** Bytes of the files under `dir` (0 when it does not exist). */
function bytesUnder (dir: string): number {
  let n = 0
  let entries
  try {
    entries = readdirSync(dir, { withFileTypes: true, recursive: true })
  } catch {
    return 0
  }
  for (const e of entries) if (e.isFile()) n += statSync(path.join(e.parentPath, e.name)).size
  return n
}

/** A fresh narwhal, `run` against it, and the server's CPU and request count over `run`. */
async function againstFresh (run: (server: Narwhal) => Promise<Timed>, serverCli = CLI): Promise<Sample> {
  const server = await startNarwhal(process.env, { NARWHAL_LOG_LEVEL: 'warn' }, undefined, undefined, serverCli)
  try {
    const pid = server.child.pid ?? 0
    const cpuBefore = cpuSeconds(pid)
    const requestsBefore = await requestsSeen(server)
    const timed = await run(server)
    const serverCpu = cpuSeconds(pid) - cpuBefore
    // The scrape before counts itself.
    const requests = await requestsSeen(server) - requestsBefore - 1
    return { ...timed, serverCpu, requests, storedBytes: bytesUnder(path.join(server.dataDir, 'store', 'nar')) }
  } finally {
    server.child.kill('SIGTERM')
  }
}

function pusherEnv (server: Narwhal, queueDir?: string): NodeJS.ProcessEnv {
  const tokenFile = path.join(mkdtempSync(path.join(os.tmpdir(), 'narwhal-bench-token-')), 'token')
  writeFileSync(tokenFile, server.token, { mode: 0o600 })
  return {
    ...nixEnv(),
    NARWHAL_SERVER: server.url,
    NARWHAL_TOKEN_FILE: tokenFile,
    NARWHAL_SECRET_KEY_FILES: server.secretKey,
    NARWHAL_QUEUE_DIR: queueDir ?? mkdtempSync(path.join(os.tmpdir(), 'narwhal-bench-queue-'))
  }
}

async function narwhalPush (server: Narwhal, roots: string[], cli = CLI, extraEnv: NodeJS.ProcessEnv = {}): Promise<Timed> {
  return await timedCommand('node', [cli, 'push', ...roots], { ...pusherEnv(server), ...extraEnv })
}

/**
 * The hook records `builds` while no pusher runs; then the pusher starts and `queue wait` is
 * timed from the pusher's start. The pusher's CPU is read from /proc before it is stopped.
 */
async function queueDrain (server: Narwhal, builds: Array<{ drv: string, out: string }>, cli = CLI): Promise<Timed> {
  const env = pusherEnv(server)
  for (const b of builds) await sh(HOOK, [], { ...env, DRV_PATH: b.drv, OUT_PATHS: b.out })
  // The queue database made beforehand, as a pusher that has run before left it (the baseline
  // build's pusher and `queue wait` could both migrate a new one at once and fail).
  await sh('node', [cli, 'queue', 'wait', '--timeout', '0'], env).catch(() => {})
  const start = process.hrtime.bigint()
  const pusher = spawn('node', [cli, 'pusher'], { env, stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  pusher.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
  const exited = new Promise<never>((_resolve, reject) => pusher.on('exit', code => reject(new Error(`the pusher exited ${code}: ${stderr.slice(-2000)}`))))
  try {
    await Promise.race([sh('node', [cli, 'queue', 'wait', '--timeout', '600'], env), exited])
    const seconds = Number(process.hrtime.bigint() - start) / 1e9
    return { seconds, cpu: cpuSeconds(pusher.pid ?? 0) }
  } finally {
    pusher.kill('SIGTERM')
  }
}

async function nixCopy (server: Narwhal, top: string): Promise<Timed> {
  return await timedCommand('nix', ['copy', '--to', `${server.url}?secret-key=${server.secretKey}&compression=zstd`, top],
    nixEnv([`netrc-file = ${writeNetrc(server.token)}`]))
}

/** `nix ARGS` of Nix 2.26, in the root scripts/nix-2.26-root.sh keeps, with this run's TMPDIR visible. */
async function nix226 (args: string[], env: NodeJS.ProcessEnv): Promise<Timed> {
  return await timedCommand(NIX226_SCRIPT, ['run', '--bind', os.tmpdir(), '--', 'nix', ...args], env)
}

async function nix226Copy (server: Narwhal, top: string): Promise<Timed> {
  return await nix226(['copy', '--to', `${server.url}?secret-key=${server.secretKey}&compression=zstd`, top],
    nixEnv([`netrc-file = ${writeNetrc(server.token)}`]))
}

interface Row { what: string, samples: Sample[], narBytes: number, client?: string }

async function main (): Promise<void> {
  useScratchTmpdir('narwhal-bench-push')
  const env = nixEnv()
  const closure = await buildPushClosure(env)
  console.error(`closure: ${closure.paths.length} paths, ${(closure.narBytes / 2 ** 20).toFixed(0)} MiB of NAR`)

  // The drain's builds: a chain of 200 small derivations over the same real paths.
  const exprDir = mkdtempSync(path.join(os.tmpdir(), 'narwhal-bench-drain-'))
  const real = (await sh('nix-store', ['--query', '--references', closure.top], env)).trim().split('\n').filter(p => !p.includes('-push-step-'))
  writeFileSync(path.join(exprDir, 'drain.nix'), chainExpression(real, DRAIN_BUILDS, 'drain', false))
  const drvs = (await sh('nix-instantiate', [path.join(exprDir, 'drain.nix')], env)).trim().split('\n')
  const outs = (await sh('nix-build', ['--no-out-link', path.join(exprDir, 'drain.nix')], env)).trim().split('\n')
  if (drvs.length !== DRAIN_BUILDS || outs.length !== DRAIN_BUILDS) throw new Error(`expected ${DRAIN_BUILDS} drain builds, got ${drvs.length}/${outs.length}`)
  const builds = drvs.map((drv, i) => ({ drv, out: outs[i] as string }))
  const drainInfo = JSON.parse(await sh('nix', ['path-info', '--json', '--recursive', ...outs], env)) as Array<{ narSize: number }>
  const drainBytes = drainInfo.reduce((n, i) => n + i.narSize, 0)
  console.error(`drain: ${DRAIN_BUILDS} builds, closure of ${drainInfo.length} paths, ${(drainBytes / 2 ** 20).toFixed(0)} MiB of NAR`)

  const levelOne = path.join(exprDir, 'level-1.json')
  writeFileSync(levelOne, JSON.stringify({ compressionLevel: 1 }))
  const uncompressed = path.join(exprDir, 'none.json')
  writeFileSync(uncompressed, JSON.stringify({ compression: 'none' }))
  const nginx = await startNginx()
  const with226 = WITH_226
  if (with226) {
    // The closure into the 2.26 root's own store, substituted from a narwhal (a no-op the next time).
    await sh(NIX226_SCRIPT, ['prepare'])
    await againstFresh(async s => {
      await narwhalPush(s, [closure.top])
      return await nix226(['copy', '--from', s.url, closure.top], nixEnv([`trusted-public-keys = ${s.publicKey}`]))
    })
  }
  try {
    const dav226 = {
      what: '`nix copy --to` nginx WebDAV, zstd (Nix 2.26)',
      bytes: closure.narBytes,
      client: '2.26',
      run: async () => {
        await resetDir(nginx.davRoot)
        const t = await nix226(['copy', '--to', `${nginx.davUrl}?compression=zstd`, closure.top], nixEnv())
        return { ...t, serverCpu: NaN, requests: NaN, storedBytes: bytesUnder(path.join(nginx.davRoot, 'nar')) }
      }
    }
    const allContenders: Array<{ what: string, bytes: number, copy?: boolean, push?: boolean, client?: string, run: () => Promise<Sample> }> = [
      {
        what: '`nix copy --to` nginx WebDAV, zstd (Nix 2.8)',
        bytes: closure.narBytes,
        copy: true,
        push: true,
        client: '2.8',
        run: async () => {
          await resetDir(nginx.davRoot)
          const t = await timedCommand('nix', ['copy', '--to', `${nginx.davUrl}?compression=zstd`, closure.top], nixEnv())
          return { ...t, serverCpu: NaN, requests: NaN, storedBytes: bytesUnder(path.join(nginx.davRoot, 'nar')) }
        }
      },
      ...(with226 ? [{ ...dav226, copy: true, push: true }] : []),
      { what: '`narwhal push` to narwhal', bytes: closure.narBytes, push: true, run: async () => await againstFresh(s => narwhalPush(s, [closure.top])) },
      ...(BASELINE === undefined ? [] : [{ what: '`narwhal push` to narwhal, baseline pusher', bytes: closure.narBytes, push: true, run: async () => await againstFresh(s => narwhalPush(s, [closure.top], BASELINE)) }]),
      { what: '`narwhal push` to narwhal, `compressionLevel: 1`', bytes: closure.narBytes, push: true, run: async () => await againstFresh(s => narwhalPush(s, [closure.top], CLI, { NARWHAL_PUSHER_CONFIG: levelOne })) },
      { what: '`narwhal push` to narwhal, `compression: none`', bytes: closure.narBytes, push: true, run: async () => await againstFresh(s => narwhalPush(s, [closure.top], CLI, { NARWHAL_PUSHER_CONFIG: uncompressed })) },
      { what: '`nix copy --to` narwhal, zstd (Nix 2.8)', bytes: closure.narBytes, copy: true, client: '2.8', run: async () => await againstFresh(s => nixCopy(s, closure.top)) },
      ...(with226 ? [{ what: '`nix copy --to` narwhal, zstd (Nix 2.26)', bytes: closure.narBytes, copy: true, client: '2.26', run: async () => await againstFresh(s => nix226Copy(s, closure.top)) }] : []),
      ...(BASELINE_SERVER === undefined ? [] : [{ what: '`nix copy --to` baseline narwhal, zstd (Nix 2.8)', bytes: closure.narBytes, copy: true, client: '2.8', run: async () => await againstFresh(s => nixCopy(s, closure.top), BASELINE_SERVER) }]),
      ...(BASELINE_SERVER === undefined || !with226 ? [] : [{ what: '`nix copy --to` baseline narwhal, zstd (Nix 2.26)', bytes: closure.narBytes, copy: true, client: '2.26', run: async () => await againstFresh(s => nix226Copy(s, closure.top), BASELINE_SERVER) }]),
      { what: `queue drain: ${DRAIN_BUILDS} hook records, then \`narwhal pusher\` until \`queue wait\` returns`, bytes: drainBytes, run: async () => await againstFresh(s => queueDrain(s, builds)) },
      ...(BASELINE === undefined ? [] : [{ what: 'queue drain, baseline pusher', bytes: drainBytes, run: async () => await againstFresh(s => queueDrain(s, builds, BASELINE)) }]),
      { what: `one \`narwhal push\` of the same ${DRAIN_BUILDS} paths`, bytes: drainBytes, run: async () => await againstFresh(s => narwhalPush(s, outs)) }
    ]
    const contenders = ONLY_ROWS === 'copy'
      ? allContenders.filter(c => c.copy === true)
      : ONLY_ROWS === 'push' ? allContenders.filter(c => c.push === true) : allContenders
    const rows: Row[] = contenders.map(c => ({ what: c.what, samples: [], narBytes: c.bytes, client: c.client }))
    for (let round = 0; round < RUNS; round++) {
      for (const [i, c] of contenders.entries()) {
        const s = await c.run()
        rows[i]?.samples.push(s)
        console.error(`round ${round + 1}: ${c.what}: ${s.seconds.toFixed(2)} s, client CPU ${s.cpu.toFixed(2)} s, server CPU ${s.serverCpu.toFixed(2)} s, ` +
          `${s.requests} requests, ${(s.storedBytes / 2 ** 20).toFixed(1)} MiB stored`)
      }
    }
    // Each `nix copy` row against its own client's WebDAV push when there is one; the rest against Nix 2.8's.
    const davOf = (client: string | undefined): number => {
      const row = rows.find(r => r.what.includes('WebDAV') && r.client === client) ?? rows[0]
      return median(row?.samples.map(s => s.seconds) ?? [])
    }
    const f = (n: number, digits = 2): string => Number.isNaN(n) ? '–' : n.toFixed(digits)
    const lines = [
      `Push benchmark (bench/push.ts), ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC, ${os.cpus().length} cores, Node ${process.version}; ` +
        `closure of ${closure.paths.length} paths, ${(closure.narBytes / 2 ** 20).toFixed(0)} MiB of NAR; the drain's ${DRAIN_BUILDS} builds: ` +
        `${drainInfo.length} paths, ${(drainBytes / 2 ** 20).toFixed(0)} MiB; medians of ${RUNS} alternated rounds, each into a fresh server; load average ${os.loadavg()[0]?.toFixed(1)} at the end` +
        (with226 ? '.' : '; Nix 2.26 not measured (BENCH_NIX226 unset).'),
      '',
      '| what | seconds (min-max) | against WebDAV | client CPU s/GiB | server CPU s/GiB | requests | MiB stored |',
      '| --- | ---: | ---: | ---: | ---: | ---: | ---: |',
      ...rows.map(r => {
        const secs = r.samples.map(s => s.seconds)
        const gib = r.narBytes / 2 ** 30
        const t = median(secs)
        return `| ${r.what} | ${f(t)} (${f(Math.min(...secs), 1)}-${f(Math.max(...secs), 1)}) | ${r.narBytes === closure.narBytes ? f(t / davOf(r.client)) + '×' : ''} | ` +
          `${f(median(r.samples.map(s => s.cpu)) / gib, 1)} | ${f(median(r.samples.map(s => s.serverCpu)) / gib, 1)} | ${f(median(r.samples.map(s => s.requests)), 0)} | ` +
          `${f(median(r.samples.map(s => s.storedBytes)) / 2 ** 20, 1)} |`
      })
    ]
    console.log(lines.join('\n'))
  } finally {
    nginx.child.kill('SIGTERM')
  }
}

main().catch((err: unknown) => {
  console.error(err)
  process.exitCode = 1
})
