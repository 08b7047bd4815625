/**
 * The transfers `npm run bench` times, shared by the run against nginx (run.ts) and the run
 * against a baseline build (versus.ts): curl downloads of a closure's NARs, plain HTTP PUT/GET,
 * and `nix copy --to` a fresh narwhal.
 */
import { mkdtempSync, writeFileSync } from 'node:fs'
import http from 'node:http'
import os from 'node:os'
import path from 'node:path'
import { startNarwhal, type BenchKey } from './servers.js'
import { nixEnv, sh, timed, writeNetrc, type BenchClient } from './tools.js'

/** Downloads every URL with curl (what Nix uses), `parallel` transfers at a time; MB/s. */
export async function downloadAll (urls: string[], bytes: number, parallel: number): Promise<number> {
  const config = path.join(mkdtempSync(path.join(os.tmpdir(), 'narwhal-bench-curl-')), 'urls')
  writeFileSync(config, urls.map(u => `url = "${u}"\noutput = "/dev/null"\n`).join(''))
  const seconds = await timed(async () => await sh('curl', ['-s', '-f', '-Z', '--parallel-max', String(parallel), '-K', config]))
  return bytes / 1e6 / seconds
}

export async function narUrls (base: string, paths: string[]): Promise<{ urls: string[], bytes: number }> {
  const urls: string[] = []
  let bytes = 0
  for (const p of paths) {
    const text = await (await fetch(`${base}/${path.basename(p).slice(0, 32)}.narinfo`)).text()
    const url = /^URL: (.*)$/m.exec(text)?.[1]
    const size = /^FileSize: (\d+)$/m.exec(text)?.[1]
    if (url === undefined || size === undefined) throw new Error(`no URL in narinfo of ${p} at ${base}`)
    urls.push(`${base}/${url}`)
    bytes += Number(size)
  }
  return { urls, bytes }
}

export function put (url: string, token: string, body: NodeJS.ReadableStream, length: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: 'PUT', headers: { authorization: `Bearer ${token}`, 'content-length': length } }, res => {
      res.resume()
      res.on('end', () => resolve(res.statusCode ?? 0))
    })
    req.on('error', reject)
    body.pipe(req)
  })
}

export function get (url: string): Promise<number> {
  return new Promise((resolve, reject) => {
    http.get(url, res => { res.resume(); res.on('end', () => resolve(res.statusCode ?? 0)) }).on('error', reject)
  })
}

/**
 * Uploads the closure with `nix copy --to` to a fresh narwhal with `workers` processes (the build
 * `cli`, this one by default; signed with `key`, a new one by default). `onDone` sees the server
 * before it is stopped (versus.ts reads its CPU time there). Seconds.
 */
export async function uploadToFresh (client: BenchClient, workers: number, top: string, compression: string,
  { cli, key, onDone }: { cli?: string, key?: BenchKey, onDone?: (pid: number) => void } = {}): Promise<number> {
  const fresh = await startNarwhal(process.env, { NARWHAL_WORKERS: String(workers) }, undefined, undefined, cli, key)
  try {
    const seconds = await timed(async () => await client.nix(['copy', '--to', `${fresh.url}?secret-key=${fresh.secretKey}&compression=${compression}`, top],
      nixEnv([`netrc-file = ${writeNetrc(fresh.token)}`])))
    onDone?.(fresh.child.pid ?? 0)
    return seconds
  } finally {
    fresh.child.kill('SIGTERM')
  }
}
