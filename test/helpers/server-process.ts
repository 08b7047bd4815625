/**
 * `narwhal serve` as a real operating-system process, for tests that must be able to kill it
 * (SIGKILL: no handler runs, no buffer is flushed, no file is closed by narwhal itself).
 *
 * The server's log goes to a file rather than a pipe: a pipe that nobody drains would stall the
 * server once it filled, and the file is there to read when a test fails.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { closeSync, openSync, readFileSync } from 'node:fs'
import path from 'node:path'
import { freePort } from '../../scripts/test-engines/ports.js'
import { backendFor } from './backend.js'
import { runOk } from './nix.js'

export const CLI = path.resolve('dist/src/cli/main.js')

// The tests' servers pick their port with it too.
export { freePort }

/** `narwhal token create` on a data folder (creating and migrating its database if needed). */
export async function createToken (dataDir: string, scope: 'read' | 'push' | 'admin'): Promise<string> {
  return (await runOk('node', [CLI, 'token', 'create', '--scope', scope, '--data', dataDir, ...(await backendFor(dataDir)).args])).trim()
}

export interface ServerProcess {
  child: ChildProcess
  url: string
  port: number
  /** SIGKILL to the server's own pid only (never a process group), and wait until it is gone. */
  kill: () => Promise<void>
  /** SIGTERM, the clean shutdown, and wait until it is gone. */
  stop: () => Promise<void>
  /** Everything the server wrote so far. */
  log: () => string
}

async function waitForExit (child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  await once(child, 'exit')
}

/**
 * Starts `narwhal serve --data DIR --listen 127.0.0.1:PORT` with the given trusted keys (and any
 * further `args`, and NARWHAL_* settings in `env`; the database and storage of the test backend,
 * helpers/backend.ts, unless `env` names them) and waits until it answers /nix-cache-info.
 */
export interface SpawnOptions {
  dataDir: string
  logFile: string
  trustedKeys: string[]
  timeoutMs?: number
  /** More arguments for `narwhal serve`. */
  args?: string[]
  /** NARWHAL_* settings; the test runner's own are never passed on. */
  env?: Record<string, string>
}

export async function spawnServer (options: SpawnOptions): Promise<ServerProcess> {
  const port = await freePort()
  const url = `http://127.0.0.1:${port}`
  const args = [CLI, 'serve', '--data', options.dataDir, '--listen', `127.0.0.1:${port}`,
    ...options.trustedKeys.flatMap(k => ['--trusted-key', k]), ...(options.args ?? [])]
  const logFd = openSync(options.logFile, 'a')
  const backend = await backendFor(options.dataDir)
  const env = { ...Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('NARWHAL_'))), ...backend.env, ...options.env }
  const child = spawn('node', args, { env, stdio: ['ignore', logFd, logFd] })
  closeSync(logFd)
  const log = (): string => readFileSync(options.logFile, 'utf8')
  const deadline = Date.now() + (options.timeoutMs ?? 60_000)
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`narwhal serve exited (${child.exitCode ?? child.signalCode ?? ''}) before answering:\n${log().slice(-4000)}`)
    }
    try {
      const response = await fetch(`${url}/nix-cache-info`)
      await response.arrayBuffer()
      if (response.status === 200) break
    } catch {
      // Not listening yet.
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL')
      throw new Error(`narwhal serve did not answer within ${options.timeoutMs ?? 60_000} ms:\n${log().slice(-4000)}`)
    }
    await new Promise(resolve => setTimeout(resolve, 50))
  }
  return {
    child,
    url,
    port,
    log,
    kill: async () => {
      if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) process.kill(child.pid, 'SIGKILL')
      await waitForExit(child)
    },
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM')
      await waitForExit(child)
    }
  }
}
