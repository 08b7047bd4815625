/**
 * Hook overhead: what a post-build-hook adds to every build. Nix runs the hook synchronously in
 * the daemon's build loop, so its whole run time is added to each build and blocks all others.
 *
 * For each setup, root starts `nix-daemon` (with `--option post-build-hook …` or without), and
 * 30 trivial derivations (each new, by a nonce) are built one at a time through the daemon with
 * `nix-build`, in three rounds that visit every setup; the table shows the median wall time per
 * build, the time added over "no hook", the ratio, and the median run time of the hook spawned
 * on its own (what the script itself costs, without Nix around it).
 *
 *   no hook                the baseline
 *   /bin/true              the floor: what Nix costs to run any hook at all
 *   bin/narwhal-hook       the POSIX sh hook narwhal ships (shell builtins only, no fork)
 *   narwhal hook           the same through Node.js (`node dist/src/cli/main.js hook`)
 *   nix copy (manual)      the Nix manual's synchronous `nix copy` hook to a narwhal server
 *
 *   node dist/bench/hook-overhead.js       (BENCH_BUILDS=N to change the 30; needs root and no
 *                                          other nix-daemon on /nix/var/nix/daemon-socket/socket)
 */
import { chmodSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { connect } from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { randomBytes } from 'node:crypto'
import { spawn } from 'node:child_process'
import { startNarwhal } from './servers.js'
import { median, sh, timed, useScratchTmpdir } from './tools.js'

const BUILDS = Number(process.env.BENCH_BUILDS ?? 30)
const ROOT = path.resolve('.')
const SOCKET = '/nix/var/nix/daemon-socket/socket'

function socketAnswers (): Promise<boolean> {
  return new Promise(resolve => {
    const s = connect(SOCKET)
    s.once('connect', () => { s.destroy(); resolve(true) })
    s.once('error', () => resolve(false))
  })
}

async function withDaemon<T> (hook: string | undefined, env: NodeJS.ProcessEnv, fn: () => Promise<T>): Promise<T> {
  const args = hook === undefined ? [] : ['--option', 'post-build-hook', hook]
  const daemon = spawn('nix-daemon', args, { env, stdio: 'ignore' })
  try {
    for (let i = 0; i < 200 && !(await socketAnswers()); i++) await new Promise(resolve => setTimeout(resolve, 25))
    return await fn()
  } finally {
    const exited = new Promise(resolve => daemon.once('exit', resolve))
    daemon.kill('SIGTERM')
    await exited
  }
}

async function main (): Promise<void> {
  useScratchTmpdir('narwhal-bench-hook')
  if (process.getuid?.() !== 0) throw new Error('hook-overhead starts nix-daemon: run it as root')
  if (await socketAnswers()) throw new Error(`another nix-daemon answers on ${SOCKET}; stop it first`)
  const socketExisted = existsSync(SOCKET)
  const work = mkdtempSync(path.join(os.tmpdir(), 'narwhal-bench-hook-'))
  const queueDir = path.join(work, 'queue')
  const expr = path.join(work, 'trivial.nix')
  writeFileSync(expr, `{ nonce }: derivation { name = "hook-bench-\${nonce}"; system = builtins.currentSystem;
    builder = "/bin/sh"; args = [ "-c" "echo \${nonce} > $out" ]; }\n`)

  const server = await startNarwhal(process.env, { NARWHAL_LOG_LEVEL: 'warn' })
  const netrc = path.join(work, 'netrc')
  writeFileSync(netrc, `machine 127.0.0.1 login bench password ${server.token}\n`, { mode: 0o600 })
  const nodeHook = path.join(work, 'narwhal-hook-node')
  writeFileSync(nodeHook, `#!/bin/sh\nexec node ${path.join(ROOT, 'dist/src/cli/main.js')} hook\n`)
  // The manual's hook (doc/manual/src/advanced-topics/post-build-hook.md), with the fallback that
  // Nix 2.8 needs because OUT_PATHS is empty there.
  const copyHook = path.join(work, 'nix-copy-hook')
  writeFileSync(copyHook, `#!/bin/sh
set -eu
set -f
export IFS=' '
OUT_PATHS="\${OUT_PATHS:-$(nix-store --query --outputs "$DRV_PATH")}"
exec nix --extra-experimental-features nix-command copy --option netrc-file ${netrc} \\
  --to '${server.url}?secret-key=${server.secretKey}&compression=zstd' $OUT_PATHS
`)
  chmodSync(nodeHook, 0o755)
  chmodSync(copyHook, 0o755)

  const setups: Array<{ name: string, hook: string | undefined }> = [
    { name: 'no hook', hook: undefined },
    // What Nix itself costs to run any hook (fork the daemon, exec, pipe the output): the floor.
    { name: '/bin/true (floor)', hook: '/bin/true' },
    { name: 'bin/narwhal-hook (sh)', hook: path.join(ROOT, 'bin/narwhal-hook') },
    { name: 'narwhal hook (node)', hook: nodeHook },
    { name: 'nix copy hook (manual)', hook: copyHook }
  ]
  // Rounds: every setup gets its share of builds in each round, so a machine whose load drifts
  // during the run (CI neighbours) skews all setups alike instead of one.
  const ROUNDS = 3
  const times = new Map<string, number[]>(setups.map(s => [s.name, []]))
  const alone = new Map<string, number[]>(setups.filter(s => s.hook !== undefined).map(s => [s.name, []]))
  try {
    for (let round = 0; round < ROUNDS; round++) {
      for (const setup of setups) {
        const env: NodeJS.ProcessEnv = {
          PATH: process.env.PATH,
          NARWHAL_QUEUE_DIR: queueDir,
          XDG_CACHE_HOME: mkdtempSync(path.join(os.tmpdir(), 'narwhal-bench-daemon-cache-')),
          NIX_CONFIG: 'substituters ='
        }
        const builds = Math.ceil(BUILDS / ROUNDS)
        await withDaemon(setup.hook, env, async () => {
          const clientEnv = { ...process.env, NIX_REMOTE: 'daemon', XDG_CACHE_HOME: env.XDG_CACHE_HOME, NIX_CONFIG: 'substituters =' }
          const one = (): Promise<number> => timed(() => sh('nix-build', ['--no-out-link', expr, '--argstr', 'nonce', randomBytes(8).toString('hex')], clientEnv))
          await one() // warm-up: the daemon's first build opens its database
          for (let i = 0; i < builds; i++) times.get(setup.name)?.push(await one() * 1000)
        })
        // The hook on its own, spawned the way Nix spawns it (no arguments, DRV_PATH set).
        if (setup.hook !== undefined && !setup.name.startsWith('nix copy')) {
          for (let i = 0; i < builds; i++) {
            alone.get(setup.name)?.push(await timed(() => sh(setup.hook ?? '', [], { ...env, DRV_PATH: expr, OUT_PATHS: '' })) * 1000)
          }
        }
      }
    }
  } finally {
    server.child.kill()
    // No stale socket: Nix's "auto" store would pick a daemon that is gone for non-root users.
    if (!socketExisted) rmSync(SOCKET, { force: true })
  }
  const results = setups.map(s => ({ name: s.name, ms: median(times.get(s.name) ?? []), alone: median(alone.get(s.name) ?? []) }))
  for (const s of setups) {
    const t = times.get(s.name) ?? []
    process.stderr.write(`${s.name}: median ${median(t).toFixed(1)} ms (min ${Math.min(...t).toFixed(1)}, max ${Math.max(...t).toFixed(1)}, n=${t.length})\n`)
  }
  const base = results[0]?.ms ?? NaN
  const lines = [
    `Hook overhead: ${BUILDS} trivial builds through nix-daemon per setup, one at a time; median wall time of nix-build`,
    '',
    '| hook | median per build (ms) | added per build (ms) | ratio to no hook | hook run alone (ms) |',
    '| --- | ---: | ---: | ---: | ---: |',
    ...results.map(r => `| ${r.name} | ${r.ms.toFixed(1)} | ${(r.ms - base).toFixed(1)} | ${(r.ms / base).toFixed(2)} | ` +
      `${Number.isNaN(r.alone) ? '-' : r.alone.toFixed(1)} |`)
  ]
  process.stdout.write(lines.join('\n') + '\n')
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? err.stack ?? err.message : String(err)}\n`)
  process.exitCode = 1
})
