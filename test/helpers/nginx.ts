/**
 * nginx serving a folder as a Nix binary cache: what `nix copy --to file://DIR` wrote, which is
 * what cache.nixos.org looks like to a client. Its own config on a free loopback port, its access
 * log in the test's folder (to count the requests an upstream received). Stopped and started
 * again on the same port to play an upstream outage.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { readFileSync, writeFileSync, existsSync, mkdirSync } from 'node:fs'
import path from 'node:path'
import type { TestContext } from 'node:test'
import { freePort } from './server-process.js'

export interface NginxCache {
  url: string
  /**
   * A second server of the same nginx that answers every request with a 302 to the same path on
   * `url`, and every request under /loop/ with a 302 to its own path with an x added (without end).
   */
  redirectingUrl: string
  root: string
  /** The request lines nginx logged ("GET /x.narinfo 200"), in order. */
  requests: () => string[]
  stop: () => Promise<void>
  start: () => Promise<void>
}

/** `limitRate`: nginx's limit_rate per connection (e.g. '2m'), so that a fetch is still under way while a test acts. */
export async function startNginxCache (t: TestContext, root: string, dir: string, options: { limitRate?: string } = {}): Promise<NginxCache> {
  const port = await freePort()
  const redirectingPort = await freePort()
  const url = `http://127.0.0.1:${port}`
  const accessLog = path.join(dir, 'access.log')
  const conf = path.join(dir, 'nginx.conf')
  mkdirSync(path.join(dir, 'tmp'), { recursive: true })
  writeFileSync(conf, `
user root;
worker_processes 1;
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log;
events { worker_connections 256; }
http {
  log_format requests '$request_method $uri $status';
  access_log ${accessLog} requests;
  client_body_temp_path ${dir}/tmp;
  proxy_temp_path ${dir}/tmp;
  fastcgi_temp_path ${dir}/tmp;
  uwsgi_temp_path ${dir}/tmp;
  scgi_temp_path ${dir}/tmp;
  types { text/x-nix-narinfo narinfo; }
  default_type application/octet-stream;
  server { listen 127.0.0.1:${port}; root ${root};${options.limitRate === undefined ? '' : ` limit_rate ${options.limitRate};`} }
  server {
    listen 127.0.0.1:${redirectingPort};
    location /loop/ { return 302 \${uri}x; }
    location / { return 302 ${url}$request_uri; }
  }
}
`)
  let child: ChildProcess | undefined
  const stop = async (): Promise<void> => {
    const running = child
    child = undefined
    if (running === undefined || running.exitCode !== null || running.signalCode !== null) return
    running.kill('SIGTERM')
    await once(running, 'exit')
  }
  const start = async (): Promise<void> => {
    const started = spawn('nginx', ['-c', conf, '-p', dir, '-e', path.join(dir, 'error.log')], { stdio: 'ignore' })
    child = started
    const deadline = Date.now() + 10_000
    for (;;) {
      if (started.exitCode !== null) throw new Error(`nginx exited ${started.exitCode}: ${readFileSync(path.join(dir, 'error.log'), 'utf8')}`)
      try {
        const response = await fetch(`${url}/nix-cache-info`)
        await response.arrayBuffer()
        if (response.status === 200) return
      } catch {
        // Not listening yet.
      }
      if (Date.now() > deadline) throw new Error('nginx did not start within 10 s')
      await new Promise(resolve => setTimeout(resolve, 50))
    }
  }
  await start()
  t.after(stop)
  return {
    url,
    redirectingUrl: `http://127.0.0.1:${redirectingPort}`,
    root,
    requests: () => existsSync(accessLog) ? readFileSync(accessLog, 'utf8').split('\n').filter(l => l !== '') : [],
    stop,
    start
  }
}
