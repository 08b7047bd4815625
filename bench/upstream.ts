/**
 * `npm run bench:upstream`: substitution through narwhal pulling from an nginx upstream, against
 * substituting directly from that nginx, side by side in one run.
 *
 *   nginx direct    nix copy --from nginx (the files `nix copy --to file://…` wrote, zstd)
 *   narwhal, cold   nix copy --from a fresh narwhal whose only content is what it pulls from that
 *                   nginx during the copy (narinfos asked, NARs fetched, verified and stored while
 *                   they stream to the client)
 *   narwhal, warm   a second client from the same narwhal: everything is stored by now
 *
 * Rounds alternate the three, so a drift in the machine's load hits all; medians are printed with
 * the ratios to nginx (goals: cold ≤ 1.3, warm ≤ 1.1). BENCH_QUICK=1: a smaller closure, 1 round;
 * BENCH_ROUNDS=N: N rounds; BENCH_BASELINE_CLI=FILE: another build's dist/src/cli/main.js run
 * beside this one; BENCH_PROFILE_DIR=DIR: CPU profiles and logs of narwhal there (node
 * --cpu-prof); BENCH_LOG_DIR=DIR: only the logs (NARWHAL_LOG_LEVEL=debug adds every request);
 * BENCH_WARMUP=1: each narwhal first substitutes another closure (buildWarmupClosure), unmeasured,
 * so that the cold copy runs in a process V8 has warmed up, as a long-running server's would.
 */
import { mkdtempSync, openSync, readFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import type { ChildProcess } from 'node:child_process'
import { buildBenchClosure, buildWarmupClosure } from './closure.js'
import { startNginx } from './servers.js'
import { freePort, median, nixEnv, sh, startProcess, timed, useScratchTmpdir } from './tools.js'

const QUICK = process.env.BENCH_QUICK === '1'
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? (QUICK ? 1 : 5))
const CLI = path.resolve('dist/src/cli/main.js')

async function startPullThrough (cli: string, upstream: string, publicKey: string): Promise<{ url: string, child: ChildProcess, dataDir: string }> {
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'narwhal-bench-pull-'))
  const port = await freePort()
  const url = `http://127.0.0.1:${port}`
  // BENCH_PROFILE_DIR: each narwhal writes a V8 CPU profile there when it stops (where its time
  // goes); BENCH_LOG_DIR (or BENCH_PROFILE_DIR): its log.
  const profileDir = process.env.BENCH_PROFILE_DIR
  const logDir = process.env.BENCH_LOG_DIR ?? profileDir
  const profile = profileDir === undefined ? [] : ['--cpu-prof', '--cpu-prof-dir', profileDir]
  const child = await startProcess('node', [...profile, cli, 'serve', '--data', dataDir, '--listen', `127.0.0.1:${port}`,
    '--upstream', upstream, '--upstream-key', publicKey], process.env, async () => (await fetch(`${url}/nix-cache-info`)).ok,
  logDir === undefined ? 'ignore' : openSync(path.join(logDir, `narwhal-${port}.log`), 'w'))
  return { url, child, dataDir }
}

/** The CPU seconds (user + system) a running process used so far, from /proc (clock ticks of 1/100 s). */
function cpuSeconds (child: ChildProcess): number {
  const fields = readFileSync(`/proc/${child.pid ?? 0}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? []
  return (Number(fields[11]) + Number(fields[12])) / 100
}

async function main (): Promise<void> {
  useScratchTmpdir('narwhal-bench-upstream')
  const env = nixEnv()
  console.error('building the closure…')
  const closure = await buildBenchClosure(env, QUICK ? 150 * 1024 * 1024 : 900 * 1024 * 1024)
  console.error(`closure: ${closure.paths.length} paths, ${(closure.narBytes / 1e6).toFixed(0)} MB of NAR`)
  const keyDir = mkdtempSync(path.join(os.tmpdir(), 'narwhal-bench-key-'))
  const secretKey = path.join(keyDir, 'secret')
  await sh('nix-store', ['--generate-binary-cache-key', 'bench-upstream-1', secretKey, path.join(keyDir, 'public')])
  const publicKey = readFileSync(path.join(keyDir, 'public'), 'utf8').trim()
  const nginx = await startNginx()
  const children: ChildProcess[] = [nginx.child]
  try {
    await sh('nix', ['copy', '--to', `file://${nginx.staticRoot}?secret-key=${secretKey}&compression=zstd`, closure.top], env)
    const warmup = process.env.BENCH_WARMUP === '1' ? await buildWarmupClosure(env) : undefined
    if (warmup !== undefined) {
      await sh('nix', ['copy', '--to', `file://${nginx.staticRoot}?secret-key=${secretKey}&compression=zstd`, warmup.top], env)
      const shared = warmup.paths.filter(p => closure.paths.includes(p)).length
      console.error(`warm-up closure: ${warmup.paths.length} paths, ${(warmup.narBytes / 1e6).toFixed(0)} MB of NAR, ${shared} shared with the measured one`)
    }
    // Wall time and the client's CPU (user + system, from /usr/bin/time): on 2 cores, whatever
    // CPU narwhal adds competes with the client's own.
    const substitute = async (url: string, top = closure.top): Promise<{ seconds: number, cpu: number }> => {
      const store = mkdtempSync(path.join(os.tmpdir(), 'narwhal-bench-store-'))
      const timeFile = path.join(store, '..', `${path.basename(store)}.time`)
      try {
        const seconds = await timed(async () => await sh('/usr/bin/time', ['-f', '%U %S', '-o', timeFile, 'nix', 'copy', '--from', url, '--to', store, top],
          nixEnv([`trusted-public-keys = ${publicKey}`])))
        const [user, system] = readFileSync(timeFile, 'utf8').trim().split(/\s+/).slice(-2).map(Number)
        return { seconds, cpu: (user ?? NaN) + (system ?? NaN) }
      } finally {
        await sh('rm', ['-rf', store, timeFile])
      }
    }
    // BENCH_BASELINE_CLI=…/dist/src/cli/main.js of another build: it runs too, in the same rounds
    // (the contenders' order reversed every other round), so a change is measured beside what it
    // replaces on this shared machine.
    const contenders = [{ label: 'narwhal', cli: CLI }]
    if (process.env.BENCH_BASELINE_CLI !== undefined) contenders.push({ label: 'baseline', cli: path.resolve(process.env.BENCH_BASELINE_CLI) })
    const direct: number[] = []
    const directCpu: number[] = []
    const runs = new Map(contenders.map(c => [c.label, { cold: [] as number[], warm: [] as number[], clientCold: [] as number[], clientWarm: [] as number[], serverCold: [] as number[], serverWarm: [] as number[] }]))
    for (let round = 0; round < ROUNDS; round++) {
      const d = await substitute(nginx.staticUrl)
      direct.push(d.seconds)
      directCpu.push(d.cpu)
      const line = [`round ${round + 1}: nginx ${d.seconds.toFixed(2)} s (client CPU ${d.cpu.toFixed(2)} s)`]
      for (const contender of round % 2 === 0 ? contenders : [...contenders].reverse()) {
        const r = runs.get(contender.label)
        if (r === undefined) continue
        const narwhal = await startPullThrough(contender.cli, nginx.staticUrl, publicKey)
        children.push(narwhal.child)
        try {
          if (warmup !== undefined) await substitute(narwhal.url, warmup.top)
          const before = cpuSeconds(narwhal.child)
          const c = await substitute(narwhal.url)
          const between = cpuSeconds(narwhal.child)
          const w = await substitute(narwhal.url)
          r.cold.push(c.seconds)
          r.warm.push(w.seconds)
          r.clientCold.push(c.cpu)
          r.clientWarm.push(w.cpu)
          r.serverCold.push(between - before)
          r.serverWarm.push(cpuSeconds(narwhal.child) - between)
          line.push(`${contender.label} cold ${c.seconds.toFixed(2)} s, warm ${w.seconds.toFixed(2)} s ` +
            `(CPU s, client/narwhal: cold ${c.cpu.toFixed(2)}/${(between - before).toFixed(2)}, warm ${w.cpu.toFixed(2)}/${(cpuSeconds(narwhal.child) - between).toFixed(2)})`)
        } finally {
          narwhal.child.kill('SIGTERM')
          await sh('rm', ['-rf', narwhal.dataDir])
        }
      }
      console.error(line.join('; '))
    }
    const ng = median(direct)
    // Each round's own ratio too: on a shared machine the load drifts between rounds more than
    // within one, and the median of the rounds' ratios is the steadier figure.
    const roundRatios = (values: number[]): number => median(values.map((v, i) => v / (direct[i] ?? NaN)))
    console.log(`Measured ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC, ${os.cpus().length} cores, load average ${os.loadavg()[0]?.toFixed(1)} at the end; ` +
      `closure of ${closure.paths.length} paths, ${(closure.narBytes / 1e6).toFixed(0)} MB of NAR (zstd); medians of ${ROUNDS} rounds, taking turns` +
      `${warmup === undefined ? '' : '; each narwhal warmed up by substituting another closure first'}.\n`)
    console.log('| substitution (nix copy --from into an empty store) | nginx direct (s) | through narwhal (s) | ratio of medians | median of rounds\' ratios | goal |')
    console.log('| --- | ---: | ---: | ---: | ---: | --- |')
    for (const [label, r] of runs) {
      const name = contenders.length === 1 ? '' : `${label}, `
      for (const [what, values, goal] of [['cold (first client, narwhal fetching)', r.cold, '≤ 1.3'], ['warm (second client)', r.warm, '≤ 1.1']] as const) {
        const value = median(values)
        console.log(`| ${name}${what} | ${ng.toFixed(2)} | ${value.toFixed(2)} | ${(value / ng).toFixed(2)} | ${roundRatios(values).toFixed(2)} | ${goal} |`)
      }
    }
    console.log(`\nCPU seconds (medians): client direct ${median(directCpu).toFixed(2)}` + [...runs].map(([label, r]) =>
      `; ${label}: client cold ${median(r.clientCold).toFixed(2)}, warm ${median(r.clientWarm).toFixed(2)}, narwhal during cold ${median(r.serverCold).toFixed(2)}, during warm ${median(r.serverWarm).toFixed(2)}`).join(''))
    console.log(`\nrounds (s): nginx ${direct.map(v => v.toFixed(2)).join(', ')}` + [...runs].map(([label, r]) =>
      `; ${label} cold ${r.cold.map(v => v.toFixed(2)).join(', ')}; ${label} warm ${r.warm.map(v => v.toFixed(2)).join(', ')}`).join(''))
  } finally {
    for (const child of children) child.kill('SIGTERM')
  }
}

main().catch((err: unknown) => {
  console.error(err)
  process.exitCode = 1
})
