/**
 * Drives the real Nix clients for the integration tests: Debian bookworm's nix-bin (Nix 2.8) on
 * the host, and Debian trixie's (Nix 2.26) in the root scripts/nix-2.26-root.sh makes. A test
 * that drives Nix runs once per client in CLIENTS and names the client in its title.
 *
 * Every call gets a fresh client-side cache folder (Nix caches narinfo answers, negative ones
 * for an hour), the nix-command feature, and no substituters unless a test names one, so tests
 * never see each other's answers or wait for cache.nixos.org.
 */
import { execFile } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { randomBytes } from 'node:crypto'
import { test, type TestContext, type TestOptions } from 'node:test'

export interface RunResult { code: number, stdout: string, stderr: string }

export interface NixOptions {
  /** Extra nix.conf lines. */
  config?: string[]
  env?: Record<string, string>
}

export function tempDir (prefix = 'narwhal-test-'): string {
  return mkdtempSync(path.join(os.tmpdir(), prefix))
}

/** Runs a command without throwing; the caller asserts on code and output. */
export function run (file: string, args: string[], options: { env?: NodeJS.ProcessEnv, input?: string } = {}): Promise<RunResult> {
  return new Promise(resolve => {
    const child = execFile(file, args, { env: options.env ?? process.env, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1
      resolve({ code, stdout: String(stdout), stderr: String(stderr) })
    })
    if (options.input !== undefined) child.stdin?.end(options.input)
  })
}

/** Runs a command and throws with its output when it fails. */
export async function runOk (file: string, args: string[], options: { env?: NodeJS.ProcessEnv, input?: string } = {}): Promise<string> {
  const result = await run(file, args, options)
  if (result.code !== 0) {
    throw new Error(`${file} ${args.join(' ')} exited ${result.code}\nstdout: ${result.stdout}\nstderr: ${result.stderr}`)
  }
  return result.stdout
}

export function nixEnv (options: NixOptions = {}): NodeJS.ProcessEnv {
  const cache = tempDir('narwhal-nix-cache-')
  const config = [
    'experimental-features = nix-command',
    'substituters =',
    'narinfo-cache-negative-ttl = 0',
    'narinfo-cache-positive-ttl = 0',
    // Bookworm's nix.conf says so, trixie's does not: test builders call /bin tools.
    'sandbox = false',
    ...(options.config ?? [])
  ]
  return { ...process.env, XDG_CACHE_HOME: cache, NIX_CONFIG: config.join('\n'), ...options.env }
}

/** One Nix client: where its programs run and which version it is. */
export interface NixClient {
  /** 'nix-2.8' (host) or 'nix-2.26' (trixie root); test titles start with it. */
  readonly name: string
  /** For assertions on the ways the two clients differ (docs/nix-clients.md). */
  readonly version: '2.8' | '2.26'
  /** Runs a program of this client (nix, nix-store, nix-build) with nixEnv(options); never throws. */
  run: (program: string, args: string[], options?: NixOptions) => Promise<RunResult>
  /** Like run, but throws with the output when the program fails; returns stdout. */
  ok: (program: string, args: string[], options?: NixOptions) => Promise<string>
  nix: (args: string[], options?: NixOptions) => Promise<RunResult>
  nixOk: (args: string[], options?: NixOptions) => Promise<string>
}

const CHECKOUT = fileURLToPath(new URL('../../../', import.meta.url))
export const NIX_226_SCRIPT = path.join(CHECKOUT, 'scripts/nix-2.26-root.sh')
export const NIX_226_ROOT = process.env.NARWHAL_NIX226_ROOT ?? '/var/cache/narwhal-test/nix-2.26'

/** The script's arguments that run `argv` inside the root, for callers that spawn it themselves. */
export function nix226RootArgs (argv: string[]): string[] {
  return ['run', '--bind', os.tmpdir(), '--', ...argv]
}

/**
 * Runs `argv` as root inside the Nix 2.26 root: os.tmpdir() and the checkout are reachable at
 * the same paths, the server on 127.0.0.1 too. Throws if the root was never made: a missing
 * client must fail the test, never look like a refusal.
 */
export async function runInNix226Root (argv: string[], options: { env?: NodeJS.ProcessEnv, input?: string } = {}): Promise<RunResult> {
  if (!existsSync(path.join(NIX_226_ROOT, '.narwhal-nix-root'))) {
    throw new Error(`no Nix 2.26 root at ${NIX_226_ROOT}: make it with ${NIX_226_SCRIPT} prepare (test/run.sh does, as root)`)
  }
  return await run(NIX_226_SCRIPT, nix226RootArgs(argv), { env: options.env, input: options.input })
}

function makeClient (name: string, version: NixClient['version'], runProgram: NixClient['run']): NixClient {
  const ok = async (program: string, args: string[], options: NixOptions = {}): Promise<string> => {
    const result = await runProgram(program, args, options)
    if (result.code !== 0) {
      throw new Error(`${name}: ${program} ${args.join(' ')} exited ${result.code}\nstdout: ${result.stdout}\nstderr: ${result.stderr}`)
    }
    return result.stdout
  }
  return {
    name,
    version,
    run: runProgram,
    ok,
    nix: (args, options) => runProgram('nix', args, options),
    nixOk: (args, options) => ok('nix', args, options)
  }
}

export const HOST_NIX = makeClient('nix-2.8', '2.8', (program, args, options = {}) => run(program, args, { env: nixEnv(options) }))

export const TRIXIE_NIX = makeClient('nix-2.26', '2.26', (program, args, options = {}) => runInNix226Root([program, ...args], { env: nixEnv(options) }))

/** Both clients: the interop tests run once with each. */
export const CLIENTS: readonly NixClient[] = [HOST_NIX, TRIXIE_NIX]

/** Declares the test once per client, its title prefixed with the client's name. */
export function testEachClient (title: string, fn: (t: TestContext, client: NixClient) => Promise<void>, options: TestOptions = {}): void {
  for (const client of CLIENTS) test(`${client.name}: ${title}`, options, async (t) => { await fn(t, client) })
}

/** The host's Nix 2.8 (tests that are not about the client). */
export function nix (args: string[], options: NixOptions = {}): Promise<RunResult> {
  return HOST_NIX.nix(args, options)
}

export async function nixOk (args: string[], options: NixOptions = {}): Promise<string> {
  return await HOST_NIX.nixOk(args, options)
}

/** A Nix `let` binding: `mk NAME SCRIPT` is a derivation that runs SCRIPT with /bin/sh. */
export const NIX_MK = 'mk = name: script: derivation { inherit name; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" script ]; };'

export interface TestClosure {
  /** The top path; its closure is [dep, data, top] plus nothing from outside. */
  top: string
  dep: string
  /** A path added with `nix-store --add` holding real files (a binary, text, random bytes). */
  data: string
  drv: string
  all: string[]
}

/**
 * Builds a fresh closure of three paths with references and real file content. A random nonce
 * makes every call produce new store paths, so uploads are never skipped as already present.
 */
export async function buildClosure (options: { dataBytes?: number, client?: NixClient } = {}): Promise<TestClosure> {
  const client = options.client ?? HOST_NIX
  const nonce = randomBytes(8).toString('hex')
  const dir = tempDir('narwhal-closure-')
  const dataDir = path.join(dir, `data-${nonce}`)
  mkdirSync(path.join(dataDir, 'sub'), { recursive: true })
  writeFileSync(path.join(dataDir, 'random.bin'), randomBytes(options.dataBytes ?? 256 * 1024))
  writeFileSync(path.join(dataDir, 'sub', 'text.txt'), 'narwhal test data\n'.repeat(1000))
  const { copyFileSync, chmodSync, symlinkSync } = await import('node:fs')
  copyFileSync('/bin/sh', path.join(dataDir, 'sh'))
  chmodSync(path.join(dataDir, 'sh'), 0o755)
  symlinkSync('sub/text.txt', path.join(dataDir, 'link'))
  const data = (await client.ok('nix-store', ['--add', dataDir])).trim()

  const expr = path.join(dir, 'closure.nix')
  writeFileSync(expr, `
    let
      ${NIX_MK}
      dep = mk "narwhal-dep-${nonce}" "/bin/mkdir $out; echo dependency > $out/file; echo ${'$'}{builtins.storePath ${JSON.stringify(data)}} > $out/data-ref";
    in mk "narwhal-top-${nonce}" "/bin/mkdir -p $out/bin; echo \${dep} > $out/dep-ref; echo building top; printf '#!/bin/sh\\necho hello\\n' > $out/bin/hello; /bin/chmod +x $out/bin/hello"
  `)
  const top = (await client.ok('nix-build', ['--no-out-link', expr])).trim()
  const drv = (await client.ok('nix-store', ['--query', '--deriver', top])).trim()
  const refs = (await client.ok('nix-store', ['--query', '--references', top])).trim().split('\n')
  const dep = refs.find(r => r.includes('narwhal-dep-'))
  if (dep === undefined) throw new Error(`top ${top} does not reference its dependency: ${refs.join(' ')}`)
  return { top, dep, data, drv, all: [data, dep, top] }
}

/** Nix's `nix-store --generate-binary-cache-key`, for keys made by the real tool. */
export async function nixKeyPair (name: string): Promise<{ secretFile: string, publicKey: string }> {
  const dir = tempDir('narwhal-key-')
  const secretFile = path.join(dir, 'secret')
  const publicFile = path.join(dir, 'public')
  await runOk('nix-store', ['--generate-binary-cache-key', name, secretFile, publicFile])
  const { readFileSync } = await import('node:fs')
  return { secretFile, publicKey: readFileSync(publicFile, 'utf8').trim() }
}

export function netrcFile (token: string, host = '127.0.0.1'): string {
  const file = path.join(tempDir('narwhal-netrc-'), 'netrc')
  writeFileSync(file, `machine ${host} login narwhal password ${token}\n`, { mode: 0o600 })
  return file
}
