/**
 * A baseline build for `npm run bench -- --baseline <commit>`: the commit checked out as a git
 * worktree under a cache folder outside the checkout (BENCH_CACHE, default ~/.cache/narwhal-bench),
 * with its own node_modules (`npm ci`) and `tsc` build. Made once per commit; later runs reuse it.
 */
import { execFileSync } from 'node:child_process'
import { existsSync, mkdirSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'

export interface Baseline { commit: string, dir: string, cli: string }

function run (file: string, args: string[], cwd: string, step: string): string {
  try {
    return execFileSync(file, args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 64 * 1024 * 1024 })
  } catch (err) {
    throw new Error(`baseline build: ${step} failed (${file} ${args.join(' ')} in ${cwd}): ${(err as Error).message}`)
  }
}

export function prepareBaseline (rev: string): Baseline {
  const repo = process.cwd()
  const commit = run('git', ['rev-parse', '--verify', `${rev}^{commit}`], repo, `resolving ${JSON.stringify(rev)}`).trim()
  const cache = process.env.BENCH_CACHE ?? path.join(os.homedir(), '.cache', 'narwhal-bench')
  const dir = path.join(cache, `baseline-${commit}`)
  const cli = path.join(dir, 'dist/src/cli/main.js')
  const built = path.join(dir, '.narwhal-bench-built')
  if (existsSync(built) && existsSync(cli)) return { commit, dir, cli }
  mkdirSync(cache, { recursive: true })
  if (!existsSync(path.join(dir, 'package.json'))) {
    // A worktree folder removed by hand stays registered until pruned.
    run('git', ['worktree', 'prune'], repo, 'git worktree prune')
    console.error(`baseline: checking out ${commit.slice(0, 12)} in ${dir}`)
    run('git', ['worktree', 'add', '--detach', dir, commit], repo, 'git worktree add')
  }
  if (!existsSync(path.join(dir, 'node_modules', '.package-lock.json'))) {
    console.error('baseline: npm ci (a few minutes: the native modules compile)')
    run('npm', ['ci', '--prefer-offline', '--no-audit', '--no-fund'], dir, 'npm ci')
  }
  console.error('baseline: tsc')
  run('npx', ['tsc', '-p', 'tsconfig.json'], dir, 'tsc')
  if (!existsSync(cli)) throw new Error(`baseline build: ${cli} is missing after tsc`)
  writeFileSync(built, `${new Date().toISOString()}\n`)
  return { commit, dir, cli }
}
