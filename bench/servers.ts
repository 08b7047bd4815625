/**
 * The servers under test, each on its own loopback port: narwhal (`narwhal serve`, as shipped),
 * nginx serving the files `nix copy --to file://…` wrote (the fastest way to serve a Nix cache
 * today), and nginx with WebDAV PUT (the plain upload baseline).
 */
import type { ChildProcess } from 'node:child_process'
import { closeSync, mkdirSync, openSync, writeFileSync, mkdtempSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { freePort, sh, startProcess } from './tools.js'

const CLI = path.resolve('dist/src/cli/main.js')

export interface Narwhal { url: string, child: ChildProcess, token: string, secretKey: string, publicKey: string, dataDir: string }

/**
 * `narwhal serve` on a fresh data folder, or on the data folder (and with the key and token) of
 * `share`, so two configurations can serve the same cache side by side. Its log (stdout) goes to
 * `logFile` when given. `cli`: another build's dist/src/cli/main.js (bench/nar-download-ab.ts,
 * versus.ts); this build's by default. `key`: the key pair of a fresh data folder (a new one by
 * default).
 */
export async function startNarwhal (env: NodeJS.ProcessEnv, extraEnv: Record<string, string> = {}, logFile?: string,
  share?: Pick<Narwhal, 'dataDir' | 'secretKey' | 'publicKey' | 'token'>, cli = CLI, key?: BenchKey): Promise<Narwhal> {
  const { dataDir, secretKey, publicKey, token } = share ?? await freshDataDir(cli, key)
  const port = await freePort()
  const url = `http://127.0.0.1:${port}`
  const log = logFile === undefined ? 'ignore' : openSync(logFile, 'a')
  try {
    const child = await startProcess('node', [cli, 'serve', '--data', dataDir, '--listen', `127.0.0.1:${port}`, '--trusted-key', publicKey],
      { ...env, ...extraEnv }, async () => (await fetch(`${url}/nix-cache-info`)).ok, log)
    return { url, child, token, secretKey, publicKey, dataDir }
  } finally {
    // The child holds its own copy of the descriptor.
    if (log !== 'ignore') closeSync(log)
  }
}

/** Stops a server started by startNarwhal and waits until it has exited (its database closed). */
export async function stopNarwhal (server: Narwhal): Promise<void> {
  if (server.child.exitCode !== null || server.child.signalCode !== null) return
  const exited = new Promise(resolve => server.child.once('exit', resolve))
  server.child.kill('SIGTERM')
  await exited
}

/** The signing key pair a fresh data folder's uploads are signed with. */
export interface BenchKey { secretKey: string, publicKey: string }

/**
 * A fresh data folder with a push token made by `cli` (the build that will serve it, so its
 * database is that build's), signed for by `key` or a new key pair.
 */
export async function freshDataDir (cli = CLI, key?: BenchKey): Promise<Pick<Narwhal, 'dataDir' | 'secretKey' | 'publicKey' | 'token'>> {
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'narwhal-bench-data-'))
  const { secretKey, publicKey } = key ?? await newKey()
  const token = (await sh('node', [cli, 'token', 'create', '--scope', 'push', '--data', dataDir])).trim()
  return { dataDir, secretKey, publicKey, token }
}

async function newKey (): Promise<BenchKey> {
  const keyDir = mkdtempSync(path.join(os.tmpdir(), 'narwhal-bench-key-'))
  const secretKey = path.join(keyDir, 'secret')
  // A name of its own: paths Nix 2.26 substituted into its root keep the signature of the server
  // they came from, and narwhal refuses a narinfo whose signature under a trusted name fails.
  const name = `bench-${path.basename(keyDir).slice(-6)}-1`
  const publicKey = (await sh('node', [CLI, 'keygen', name, '--secret-out', secretKey, '--public-out', path.join(keyDir, 'public')])).trim()
  return { secretKey, publicKey }
}

export interface Nginx { staticUrl: string, davUrl: string, staticRoot: string, davRoot: string, child: ChildProcess }

export async function startNginx (): Promise<Nginx> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'narwhal-bench-nginx-'))
  const staticRoot = path.join(dir, 'static')
  const davRoot = path.join(dir, 'dav')
  for (const d of [staticRoot, davRoot]) mkdirSync(d, { recursive: true })
  const [staticPort, davPort] = [await freePort(), await freePort()]
  const staticUrl = `http://127.0.0.1:${staticPort}`
  const child = await runNginx(dir, `
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:${staticPort}; root ${staticRoot}; }
  server {
    listen 127.0.0.1:${davPort};
    root ${davRoot};
    client_max_body_size 0;
    dav_methods PUT;
    create_full_put_path on;
  }`, async () => (await fetch(`${staticUrl}/none`)).status === 404)
  return { staticUrl, davUrl: `http://127.0.0.1:${davPort}`, staticRoot, davRoot, child }
}

export interface Balancer { url: string, child: ChildProcess }

/** nginx load-balancing `backends` (http://HOST:PORT) with the README's upstream block ("Several machines"). */
export async function startNginxBalancer (backends: string[]): Promise<Balancer> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'narwhal-bench-balancer-'))
  const port = await freePort()
  const url = `http://127.0.0.1:${port}`
  const child = await runNginx(dir, `
  upstream narwhal { ${backends.map(b => `server ${new URL(b).host};`).join(' ')} keepalive 32; }
  server {
    listen 127.0.0.1:${port};
    client_max_body_size 0; proxy_request_buffering off; proxy_buffering off;
    location / { proxy_pass http://narwhal; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_set_header Host $host; }
  }`, async () => (await fetch(`${url}/nix-cache-info`)).ok)
  return { url, child }
}

/**
 * nginx in the foreground as root, with its pid, error log and temporary files in `dir` (not the
 * system's), no access log, and `http` inside its http block; started once `ready` says so.
 */
async function runNginx (dir: string, http: string, ready: () => Promise<boolean>): Promise<ChildProcess> {
  mkdirSync(path.join(dir, 'tmp'), { recursive: true })
  const conf = path.join(dir, 'nginx.conf')
  writeFileSync(conf, `
user root;
worker_processes auto;
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path ${dir}/tmp;
  proxy_temp_path ${dir}/tmp;
  fastcgi_temp_path ${dir}/tmp;
  uwsgi_temp_path ${dir}/tmp;
  scgi_temp_path ${dir}/tmp;${http}
}
`)
  return await startProcess('nginx', ['-c', conf, '-p', dir], process.env, ready)
}

export async function resetDir (dir: string): Promise<void> {
  await sh('find', [dir, '-mindepth', '1', '-delete'])
}
