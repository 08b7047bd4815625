/**
 * Drives the real Nix client (Debian's nix-bin, Nix 2.8) for the integration tests.
 *
 * Every call gets a fresh client-side cache folder (Nix caches narinfo answers, negative ones
 * for an hour), the nix-command feature, and no substituters unless a test names one, so tests
 * never see each other's answers or wait for cache.nixos.org.
 */
import { execFile } from 'node:child_process'
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { randomBytes } from 'node:crypto'

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
    ...(options.config ?? [])
  ]
  return { ...process.env, XDG_CACHE_HOME: cache, NIX_CONFIG: config.join('\n'), ...options.env }
}

export function nix (args: string[], options: NixOptions = {}): Promise<RunResult> {
  return run('nix', args, { env: nixEnv(options) })
}

export async function nixOk (args: string[], options: NixOptions = {}): Promise<string> {
  return await runOk('nix', args, { env: nixEnv(options) })
}

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
export async function buildClosure (options: { dataBytes?: number } = {}): Promise<TestClosure> {
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
  const data = (await runOk('nix-store', ['--add', dataDir], { env: nixEnv() })).trim()

  const expr = path.join(dir, 'closure.nix')
  writeFileSync(expr, `
    let
      mk = name: script: derivation {
        inherit name;
        system = builtins.currentSystem;
        builder = "/bin/sh";
        args = [ "-c" script ];
        nonce = "${nonce}";
      };
      dep = mk "narwhal-dep-${nonce}" "/bin/mkdir $out; echo dependency > $out/file; echo ${'$'}{builtins.storePath ${JSON.stringify(data)}} > $out/data-ref";
    in mk "narwhal-top-${nonce}" "/bin/mkdir -p $out/bin; echo \${dep} > $out/dep-ref; echo building top; printf '#!/bin/sh\\necho hello\\n' > $out/bin/hello; /bin/chmod +x $out/bin/hello"
  `)
  const top = (await runOk('nix-build', ['--no-out-link', expr], { env: nixEnv() })).trim()
  const drv = (await runOk('nix-store', ['--query', '--deriver', top], { env: nixEnv() })).trim()
  const refs = (await runOk('nix-store', ['--query', '--references', top], { env: nixEnv() })).trim().split('\n')
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
