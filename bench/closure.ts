/**
 * The benchmark's data: a closure of real files, several hundred store paths and about 1 GB of
 * NAR. Real libraries and interpreters are added with `nix-store --add` (content-addressed, so a
 * second run reuses them), and small derivations reference them, so the closure has the shape of
 * a real one: a few large paths, many small ones, and references between them.
 */
import { lstatSync, readdirSync, writeFileSync, mkdtempSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { sh } from './tools.js'

export interface BenchClosure { top: string, paths: string[], narBytes: number }

const NAME = /^[0-9a-zA-Z+\-_?=][0-9a-zA-Z+\-._?=]*$/

function sizeOf (p: string): number {
  const st = lstatSync(p)
  if (st.isSymbolicLink()) return 0
  if (!st.isDirectory()) return st.size
  return readdirSync(p).reduce((sum, name) => sum + sizeOf(path.join(p, name)), 0)
}

/** The largest regular files and folders of a library folder, up to `budget` bytes. */
function pickLargest (dir: string, budget: number): string[] {
  const entries = readdirSync(dir)
    .filter(name => NAME.test(name))
    .map(name => path.join(dir, name))
    .filter(p => !lstatSync(p).isSymbolicLink())
    .map(p => ({ p, size: sizeOf(p) }))
    .sort((a, b) => b.size - a.size)
  const chosen: string[] = []
  let total = 0
  for (const e of entries) {
    if (total + e.size > budget) continue
    chosen.push(e.p)
    total += e.size
  }
  return chosen
}

export async function buildBenchClosure (env: NodeJS.ProcessEnv, targetBytes = 900 * 1024 * 1024): Promise<BenchClosure> {
  const sources = [
    ...['/usr/lib/python3.11', '/usr/share/perl'].filter(p => { try { return lstatSync(p).isDirectory() } catch { return false } }),
    ...pickLargest('/usr/lib/x86_64-linux-gnu', targetBytes - 80 * 1024 * 1024)
  ]
  return await closureOver(env, sources, 300, 'bench')
}

/**
 * Other paths than the bench closure's (`/usr/lib/python3` and 300 small derivations), for
 * `BENCH_WARMUP=1 npm run bench:upstream`: substituted through a narwhal before its measured cold
 * copy, so that copy runs in a process whose code V8 has compiled already.
 */
export async function buildWarmupClosure (env: NodeJS.ProcessEnv): Promise<BenchClosure> {
  return await closureOver(env, ['/usr/lib/python3'], 300, 'warmup')
}

/**
 * The push benchmark's closure (issue 18): `/usr/lib/gcc`, `/usr/share/perl`, `/usr/lib/python3`
 * and `/usr/share/doc` (thousands of small files) and 150 small derivations, about 155 paths.
 */
export async function buildPushClosure (env: NodeJS.ProcessEnv): Promise<BenchClosure> {
  const sources = ['/usr/lib/gcc', '/usr/share/perl', '/usr/lib/python3', '/usr/share/doc']
    .filter(p => { try { return lstatSync(p).isDirectory() } catch { return false } })
  return await closureOver(env, sources, 150, 'push')
}

/**
 * `sources` added to the store, then a chain of `steps` small derivations, each referencing the
 * previous one and a slice of the real paths, and a top path referencing everything: a closure
 * with a realistic reference graph. `prefix` names the derivations (bench-step-1, push-step-1…).
 */
async function closureOver (env: NodeJS.ProcessEnv, sources: string[], steps: number, prefix: string): Promise<BenchClosure> {
  const added: string[] = []
  for (let i = 0; i < sources.length; i += 100) {
    added.push(...(await sh('nix-store', ['--add', ...sources.slice(i, i + 100)], env)).trim().split('\n'))
  }
  const dir = mkdtempSync(path.join(os.tmpdir(), 'narwhal-bench-closure-'))
  const expr = path.join(dir, 'closure.nix')
  writeFileSync(expr, chainExpression(added, steps, prefix))
  const top = (await sh('nix-build', ['--no-out-link', expr], env)).trim()
  const paths = (await sh('nix-store', ['--query', '--requisites', top], env)).trim().split('\n')
  const info = JSON.parse(await sh('nix', ['path-info', '--json', '--recursive', top], env)) as Array<{ narSize: number }>
  return { top, paths, narBytes: info.reduce((sum, i) => sum + i.narSize, 0) }
}

/** The Nix expression of closureOver's chain; `top = false` gives the list of its steps instead. */
export function chainExpression (real: string[], steps: number, prefix: string, top = true): string {
  const list = real.map(p => `(builtins.storePath ${JSON.stringify(p)})`).join('\n    ')
  return `
let
  real = [
    ${list}
  ];
  mk = name: script: derivation { inherit name; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" script ]; };
  step = prev: i: mk "${prefix}-step-\${toString i}" "echo \${prev} > $out; echo \${builtins.elemAt real (builtins.div (i * (builtins.length real)) ${steps})} >> $out";
  chain = builtins.foldl' step (mk "${prefix}-step-root" "echo root > $out") (builtins.genList (i: i) ${steps});
  stepsList = builtins.genList (n: builtins.foldl' step (mk "${prefix}-step-root" "echo root > $out") (builtins.genList (i: i) (n + 1))) ${steps};
in ${top ? `mk "${prefix}-top" "echo \${chain} > $out; echo \${builtins.concatStringsSep " " real} >> $out"` : 'stepsList'}
`
}
