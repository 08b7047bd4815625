/**
 * Where the time of one push goes (issue 18): the bench closure (bench/closure.ts) pushed by the
 * pusher's own code into a fresh narwhal, with the moment each request was answered, and the CPU
 * of the pusher (this process) and of the server (from /proc).
 *
 *   node dist/bench/push-timeline.js
 *
 *   BENCH_COMPRESSION=none|zstd|xz   the pusher's compression (default none)
 *   BENCH_LEVEL=1                     its level (default: the codec's)
 *   BENCH_RUNS=1                      pushes, each into a fresh server
 *
 * No CLI start-up (measure that with a push that uploads nothing); 4 uploads at once and the
 * batch sizes of the pusher's defaults. Prints; never asserts on time.
 */
import { closureInfo } from '../src/pusher/closure.js'
import { defaultPusherConfig, type PushCompression } from '../src/pusher/config.js'
import { pushClosure, pushSettings } from '../src/pusher/push-closure.js'
import { loadSecretKeys } from '../src/pusher/signer.js'
import { CacheClient, type BatchPart } from '../src/pusher/uploader.js'
import type { BatchPartResult } from '../src/api/v1.js'
import { buildPushClosure } from './closure.js'
import { startNarwhal } from './servers.js'
import { cpuSecondsTree, nixEnv, useScratchTmpdir } from './tools.js'

const RUNS = Number(process.env.BENCH_RUNS ?? '1')
const COMPRESSION = (process.env.BENCH_COMPRESSION ?? 'none') as PushCompression
const LEVEL = process.env.BENCH_LEVEL === undefined ? undefined : Number(process.env.BENCH_LEVEL)

/** A CacheClient that notes when each request was answered, from `start`. */
class TimedClient extends CacheClient {
  readonly marks: Array<{ ms: number, what: string }> = []
  start = performance.now()

  private mark (what: string, since: number): void {
    const now = performance.now()
    this.marks.push({ ms: now - this.start, what: `${what} (${(now - since).toFixed(0)} ms in flight)` })
  }

  override async missing (hashParts: string[]): Promise<string[]> {
    const since = performance.now()
    const missing = await super.missing(hashParts)
    this.mark(`missing-paths question, ${hashParts.length} paths`, since)
    return missing
  }

  override async putNar (url: string, body: { file?: string, chunks?: Buffer[], stream?: () => AsyncIterable<Buffer> }, size: number): Promise<void> {
    const since = performance.now()
    await super.putNar(url, body, size)
    this.mark(`PUT of a NAR of ${(size / 1e6).toFixed(1)} MB`, since)
  }

  override async uploadBatch (parts: BatchPart[], sizes: Map<string, number>): Promise<BatchPartResult[]> {
    const since = performance.now()
    const results = await super.uploadBatch(parts, sizes)
    this.mark(`batch of ${parts.length} ${parts[0]?.text === undefined ? 'NARs' : 'narinfos'}`, since)
    return results
  }
}

async function main (): Promise<void> {
  useScratchTmpdir('narwhal-bench-push-timeline')
  const closure = await buildPushClosure(nixEnv())
  const settings = { ...pushSettings(defaultPusherConfig()), compression: COMPRESSION, compressionLevel: LEVEL }
  console.log(`closure: ${closure.paths.length} paths, ${(closure.narBytes / 2 ** 20).toFixed(0)} MiB of NAR; ` +
    `compression ${COMPRESSION}${LEVEL === undefined ? '' : ` level ${LEVEL}`}`)
  for (let run = 0; run < RUNS; run++) {
    const server = await startNarwhal(process.env, { NARWHAL_LOG_LEVEL: 'warn' })
    const client = new TimedClient(server.url, server.token)
    try {
      const serverCpu = cpuSecondsTree(server.child.pid ?? 0)
      const cpu = process.cpuUsage()
      const started = performance.now()
      const infos = await closureInfo([closure.top])
      client.start = performance.now()
      const result = await pushClosure(infos, {
        ...settings,
        client,
        keys: loadSecretKeys([server.secretKey]),
        tmpDir: process.env.TMPDIR ?? '/tmp',
        requestAttempts: 3,
        backoff: { baseMs: 100, maxMs: 1000 }
      })
      const wall = performance.now() - started
      const used = process.cpuUsage(cpu)
      console.log(`run ${run + 1}: ${(wall / 1000).toFixed(2)} s, \`nix path-info\` ${(client.start - started).toFixed(0)} ms, ` +
        `${result.uploaded.length} uploaded, ${result.failed.length} failed; pusher CPU ${((used.user + used.system) / 1e6).toFixed(2)} s, ` +
        `server CPU ${(cpuSecondsTree(server.child.pid ?? 0) - serverCpu).toFixed(2)} s`)
      for (const m of client.marks) console.log(`  +${m.ms.toFixed(0).padStart(5)} ms  ${m.what}`)
    } finally {
      await client.close()
      server.child.kill('SIGTERM')
    }
  }
}

main().catch((err: unknown) => {
  console.error(err)
  process.exitCode = 1
})
