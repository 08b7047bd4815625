/**
 * Helpers for the end-to-end test: a real multi-user nix-daemon (root) with narwhal's hook, a
 * narwhal server and pusher as child processes, and an unprivileged user in `nix-users`.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { chmodSync, closeSync, existsSync, mkdirSync, openSync, writeFileSync } from 'node:fs'
import { createServer, connect } from 'node:net'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { HOST_NIX, NIX_226_SCRIPT, TRIXIE_NIX, nix226RootArgs, run, runInNix226Root, runOk, type NixClient, type RunResult } from '../helpers/nix.js'

export const ROOT = fileURLToPath(new URL('../../../', import.meta.url))
export const CLI = path.join(ROOT, 'dist/src/cli/main.js')
export const HOOK = path.join(ROOT, 'bin/narwhal-hook')
export const USER = 'narwhaltest'
export const DAEMON_SOCKET = '/nix/var/nix/daemon-socket/socket'

export async function freePort (): Promise<number> {
  const server = createServer()
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  const address = server.address()
  await new Promise<void>(resolve => server.close(() => resolve()))
  if (address === null || typeof address === 'string') throw new Error('no port')
  return address.port
}

/** True when something already answers on the daemon socket (another daemon we must not touch). */
export function daemonAnswers (socketPath = DAEMON_SOCKET): Promise<boolean> {
  return new Promise(resolve => {
    if (!existsSync(socketPath)) { resolve(false); return }
    const socket = connect(socketPath)
    socket.once('connect', () => { socket.destroy(); resolve(true) })
    socket.once('error', () => resolve(false))
  })
}

export async function ensureUser (): Promise<void> {
  if ((await run('id', [USER])).code !== 0) await runOk('useradd', ['-m', '-G', 'nix-users', USER])
  else await runOk('usermod', ['-a', '-G', 'nix-users', USER])
}

/**
 * Where the daemon, the pusher and the user's builds run: the host with its Nix 2.8, or the
 * trixie root with Nix 2.26. The narwhal server always runs on the host; the root shares its
 * network, and its daemon listens on a socket of the test's own so it never meets another.
 */
export interface DaemonSide {
  client: NixClient
  /** Runs a command as root on this side. */
  run: (argv: string[], env?: NodeJS.ProcessEnv) => Promise<RunResult>
  /** Starts a long-running process on this side; its pid is the process itself. */
  start: (name: string, argv: string[], env: NodeJS.ProcessEnv, logDir: string) => Child
  /** The daemon socket for a test whose working folder is `work`. */
  socket: (work: string) => string
  /** Environment for the user's shell command that makes Nix talk to this daemon. */
  userEnv: (socket: string) => string
  ensureUser: () => Promise<void>
}

export const HOST_SIDE: DaemonSide = {
  client: HOST_NIX,
  run: (argv, env) => run(argv[0] ?? '', argv.slice(1), { env: env ?? process.env }),
  start: (name, argv, env, logDir) => startChild(name, argv[0] ?? '', argv.slice(1), env, logDir),
  socket: () => DAEMON_SOCKET,
  userEnv: () => 'NIX_REMOTE=daemon',
  ensureUser
}

export const TRIXIE_SIDE: DaemonSide = {
  client: TRIXIE_NIX,
  run: (argv, env) => runInNix226Root(argv, { env: env ?? process.env }),
  start: (name, argv, env, logDir) => startChild(name, NIX_226_SCRIPT, nix226RootArgs(argv), env, logDir),
  socket: (work) => path.join(work, 'daemon-socket', 'socket'),
  userEnv: (socket) => `NIX_REMOTE=daemon NIX_DAEMON_SOCKET_PATH=${socket}`,
  ensureUser: async () => {
    const result = await runInNix226Root(['sh', '-c', `id ${USER} >/dev/null 2>&1 && usermod -a -G nix-users ${USER} || useradd -m -G nix-users ${USER}`])
    if (result.code !== 0) throw new Error(`could not make ${USER} in the Nix 2.26 root: ${result.stderr}`)
  }
}

export async function waitFor (what: string, check: () => Promise<boolean> | boolean, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 50))
  }
}

export interface Child {
  process: ChildProcess
  log: string
  stop: (signal?: NodeJS.Signals) => Promise<void>
}

export function startChild (name: string, file: string, args: string[], env: NodeJS.ProcessEnv, logDir: string): Child {
  const log = path.join(logDir, `${name}.log`)
  const fd = openSync(log, 'a')
  const child = spawn(file, args, { env, stdio: ['ignore', fd, fd] })
  closeSync(fd)
  const exited = new Promise<void>(resolve => child.once('exit', () => resolve()))
  return {
    process: child,
    log,
    stop: async (signal: NodeJS.Signals = 'SIGTERM') => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal)
      await exited
    }
  }
}

/** The chain a → b → c (c's closure is all three); `blobMiB` of random bytes in a. */
export function writeChain (dir: string, file = 'chain.nix'): string {
  const expr = path.join(dir, file)
  writeFileSync(expr, `{ nonce, blobMiB ? 0 }:
let
  mk = name: script: derivation {
    inherit name nonce;
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" script ];
  };
  a = mk "e2e-a-\${nonce}" ("/bin/mkdir $out; echo a > $out/a" +
    (if blobMiB > 0 then "; /bin/dd if=/dev/urandom of=$out/blob bs=1048576 count=\${toString blobMiB} 2>/dev/null" else ""));
  b = mk "e2e-b-\${nonce}" "/bin/mkdir $out; echo \${a} > $out/ref";
in mk "e2e-c-\${nonce}" "/bin/mkdir $out; echo \${b} > $out/ref"
`)
  chmodSync(expr, 0o644)
  return expr
}

export function userDir (base: string): string {
  const dir = path.join(base, 'user')
  mkdirSync(dir, { recursive: true })
  chmodSync(dir, 0o777)
  return dir
}
