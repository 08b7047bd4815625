/**
 * The pusher's job loop against a real server and the real store: outputs filled in from the
 * derivation (OUT_PATHS is empty on Nix 2.8), collected paths dropped with a note, a down server
 * retried with backoff, and the loop draining spool files the sh hook wrote.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync, mkdirSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { defaultPusherConfig, type PusherConfig } from '../../src/pusher/config.js'
import { openQueue } from '../../src/cli/open-queue.js'
import { queueStatus } from '../../src/pusher/queue.js'
import { processJob, processJobs, runPusher, type ServiceOptions } from '../../src/pusher/service.js'
import { loadSecretKeys } from '../../src/pusher/signer.js'
import { CacheClient } from '../../src/pusher/uploader.js'
import { buildClosure, nixKeyPair, run, tempDir } from '../helpers/nix.js'
import { startServer } from '../helpers/server.js'
import { HOOK_SH } from './hook-helpers.js'

const GONE = '/nix/store/00000000000000000000000000000000-collected'

async function setUp (t: import('node:test').TestContext) {
  const key = await nixKeyPair('service-1')
  const server = await startServer(t, { trustedKeys: [key.publicKey] })
  const queueDir = tempDir('narwhal-queue-')
  const config: PusherConfig = { ...defaultPusherConfig(), server: server.url, queueDir, secretKeyFiles: [key.secretFile], maxRetryDelaySeconds: 1, pollMs: 50 }
  const queue = openQueue(queueDir)
  const client = new CacheClient(server.url, (await server.token('push')))
  t.after(async () => { queue.close(); await client.close() })
  const lines: string[] = []
  const controller = new AbortController()
  const options: ServiceOptions = { config, queue, client, keys: loadSecretKeys([key.secretFile]), log: l => lines.push(l), signal: controller.signal }
  return { key, server, queueDir, config, queue, client, lines, options, controller }
}

test('a job with only DRV_PATH pushes the derivation\'s outputs and their closure, and logs one line', async (t) => {
  const { server, queue, options, lines } = await setUp(t)
  const closure = await buildClosure()
  const job = queue.enqueue({ jobId: 'j1', drvPath: closure.drv, outPaths: [] })
  const outcome = await processJob(queue.claimNext()!, options)
  assert.equal(outcome.state, 'done', outcome.message)
  assert.equal((await server.cache.metadata.narinfos.count()), 3)
  const done = queue.job(job.seq)!
  assert.equal(done.state, 'done')
  assert.equal(done.pathsUploaded, 3)
  assert.equal(lines.length, 1)
  assert.match(lines[0]!, new RegExp(`^pushed ${path.basename(closure.top)}: 3 paths in closure, 3 uploaded \\(.* NAR, .* sent\\), 0 already cached in \\d+\\.\\d\\d s$`))
})

test('jobs claimed together go up as one push; each is finished with its own closure\'s counts', async (t) => {
  const { server, queue, options } = await setUp(t)
  const a = await buildClosure()
  const b = await buildClosure()
  const jobA = queue.enqueue({ jobId: 'a', drvPath: a.drv, outPaths: [] })
  const jobDep = queue.enqueue({ jobId: 'a-dep', drvPath: '', outPaths: [a.dep] })
  const jobB = queue.enqueue({ jobId: 'b', drvPath: '', outPaths: [b.top] })
  const jobGone = queue.enqueue({ jobId: 'gone', drvPath: `${GONE}.drv`, outPaths: [] })
  const claimed = queue.claimDue(10)
  assert.equal(claimed.length, 4)
  const outcomes = await processJobs(claimed, options)
  assert.deepEqual(outcomes.map(o => o.state), ['done', 'done', 'done', 'done'], outcomes.map(o => o.message).join('\n'))
  assert.equal((await server.cache.metadata.narinfos.count()), 6)
  assert.equal(queue.job(jobA.seq)?.pathsTotal, 3)
  assert.equal(queue.job(jobDep.seq)?.pathsTotal, 2)
  assert.equal(queue.job(jobB.seq)?.pathsUploaded, 3)
  // Each upload is credited to one job, the first (oldest) whose closure holds it.
  assert.equal(queue.job(jobA.seq)?.pathsUploaded, 3)
  assert.equal(queue.job(jobDep.seq)?.pathsUploaded, 0)
  assert.match(queue.job(jobGone.seq)?.note ?? '', /derivation .* is no longer in the store/)
  assert.equal(queue.status().counts.done, 4)
})

test('collected paths are dropped with a note, not retried', async (t) => {
  const { queue, options } = await setUp(t)
  const a = queue.enqueue({ jobId: 'gone-drv', drvPath: `${GONE}.drv`, outPaths: [] })
  assert.equal((await processJob(queue.claimNext()!, options)).state, 'done')
  assert.match(queue.job(a.seq)!.note ?? '', /derivation .* is no longer in the store/)
  const b = queue.enqueue({ jobId: 'gone-out', drvPath: '', outPaths: [GONE] })
  assert.equal((await processJob(queue.claimNext()!, options)).state, 'done')
  assert.match(queue.job(b.seq)!.note ?? '', /dropped .*collected: no longer in the store/)
  assert.equal(queue.status().paths[0]?.state, 'dropped')
})

test('a down server leaves the job pending with backoff and the reason; it completes once the server answers', async (t) => {
  const { queue, options, server } = await setUp(t)
  const closure = await buildClosure()
  const job = queue.enqueue({ jobId: 'j', drvPath: closure.drv, outPaths: [] })
  const down = new CacheClient('http://127.0.0.1:9', undefined)
  const outcome = await processJob(queue.claimNext()!, { ...options, client: down })
  await down.close()
  assert.equal(outcome.state, 'retry')
  const pending = queue.job(job.seq)!
  assert.equal(pending.state, 'pending')
  assert.equal(pending.attempts, 1)
  assert.match(pending.lastError ?? '', /ECONNREFUSED/)
  assert.ok(pending.nextAttemptAt > Date.now() - 10)
  await new Promise(resolve => setTimeout(resolve, Math.max(0, pending.nextAttemptAt - Date.now()) + 10))
  assert.equal((await processJob(queue.claimNext()!, options)).state, 'done')
  assert.equal((await server.cache.metadata.narinfos.count()), 3)
})

test('the loop drains what the sh hook spooled, then stops on abort', async (t) => {
  const { server, queueDir, queue, options, controller } = await setUp(t)
  const a = await buildClosure()
  const b = await buildClosure()
  for (const drv of [a.drv, b.drv]) {
    const r = await run(HOOK_SH, [], { env: { PATH: process.env.PATH, NARWHAL_QUEUE_DIR: queueDir, DRV_PATH: drv, OUT_PATHS: '' } })
    assert.equal(r.code, 0)
  }
  const leftover = path.join(queueDir, 'tmp', 'nar-1-dead.tmp')
  mkdirSync(path.dirname(leftover), { recursive: true })
  writeFileSync(leftover, 'a NAR temp file of a pusher killed mid-upload')
  const loop = runPusher(options)
  const deadline = Date.now() + 30_000
  while ((await server.cache.metadata.narinfos.count()) < 6 && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 50))
  controller.abort()
  await loop
  assert.equal((await server.cache.metadata.narinfos.count()), 6)
  const s = queueStatus(queue, queueDir)
  assert.equal(s.counts.done, 2)
  assert.equal(s.spooled, 0)
  assert.ok(!existsSync(leftover), 'temp files of a killed pusher are removed at start')
})
