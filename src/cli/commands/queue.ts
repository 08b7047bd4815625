/**
 * `narwhal queue status|wait`: what the pusher's queue holds, and (for CI) waiting until it is
 * drained.
 *
 *   narwhal queue status [--config FILE]
 *   narwhal queue wait [--timeout SECONDS] [--config FILE]
 *       exit 0   drained: nothing spooled, pending or in flight, and no job that was unfinished
 *                when the wait began (or arrived since) failed
 *       exit 1   drained, but such a job failed (the reasons are printed)
 *       exit 124 the timeout passed first (what is still pending, and why, is printed)
 */
import { existsSync } from 'node:fs'
import path from 'node:path'
import { loadPusherConfig } from '../../pusher/config.js'
import { queueStatus, type Job, type QueueStatus } from '../../pusher/queue.js'
import { listSpool } from '../../pusher/spool.js'
import { sleep } from '../../pusher/retry.js'
import { formatBytes } from '../../pusher/service.js'
import { openQueue, queueDatabasePath } from '../open-queue.js'
import { parse, UsageError } from '../usage.js'

const USAGE = 'usage: narwhal queue status [--config FILE]\n       narwhal queue wait [--timeout SECONDS] [--config FILE]'

function describe (job: Job): string {
  const what = job.drvPath !== '' ? path.basename(job.drvPath) : job.outPaths.map(p => path.basename(p)).join(' ')
  return `#${job.seq} ${what}`
}

function indent (text: string): string {
  return text.split('\n').map(l => `      ${l}`).join('\n')
}

export function formatStatus (s: QueueStatus, now = Date.now()): string {
  const out: string[] = []
  out.push(`spooled ${s.spooled}  pending ${s.counts.pending}  in flight ${s.counts.running}  ` +
    `done ${s.counts.done}  failed ${s.counts.failed}`)
  for (const job of s.running) out.push(`  in flight ${describe(job)}`)
  for (const job of s.pending) {
    const wait = Math.max(0, job.nextAttemptAt - now)
    out.push(`  pending   ${describe(job)}` + (job.attempts > 0 ? ` (attempt ${job.attempts + 1} in ${(wait / 1000).toFixed(1)} s)` : ''))
    if (job.lastError !== null) out.push(indent(`last error: ${job.lastError}`))
  }
  for (const job of s.failed) {
    out.push(`  failed    ${describe(job)} (${job.pathsUploaded}/${job.pathsTotal} paths, ${formatBytes(job.bytesUploaded)})`)
    if (job.lastError !== null) out.push(indent(job.lastError))
  }
  for (const p of s.paths) out.push(`  ${p.state.padEnd(9)} ${p.storePath}: ${p.reason}`)
  return out.join('\n') + '\n'
}

export async function queueCommand (args: string[]): Promise<number> {
  const [action, ...rest] = args
  const { values } = parse(rest, { config: { type: 'string' }, timeout: { type: 'string' } })
  const config = loadPusherConfig({ configFile: values.config })
  if (action === 'status') {
    if (values.timeout !== undefined) throw new UsageError(USAGE)
    if (!existsSync(queueDatabasePath(config.queueDir))) {
      process.stdout.write(`no queue in ${config.queueDir} yet (spooled ${listSpool(config.queueDir).length}); ` +
        'the pusher creates it on its first start\n')
      return 0
    }
    const queue = openQueue(config.queueDir)
    try {
      process.stdout.write(formatStatus(queueStatus(queue, config.queueDir)))
    } finally {
      queue.close()
    }
    return 0
  }
  if (action === 'wait') {
    const timeout = values.timeout === undefined ? Infinity : Number(values.timeout)
    if (!(timeout >= 0)) throw new UsageError(`--timeout must be a number of seconds\n${USAGE}`)
    return await waitDrained(config.queueDir, timeout * 1000)
  }
  throw new UsageError(USAGE)
}

async function waitDrained (queueDir: string, timeoutMs: number): Promise<number> {
  const deadline = Date.now() + timeoutMs
  const queue = openQueue(queueDir)
  try {
    // The jobs this wait is about: those unfinished now, and any that arrive later.
    const lastSeq = queue.lastSeq()
    const watched = new Set(queue.jobsSince(lastSeq).map(j => j.seq))
    for (;;) {
      const status = queueStatus(queue, queueDir)
      for (const j of queue.jobsSince(lastSeq)) watched.add(j.seq)
      if (status.spooled === 0 && status.counts.pending === 0 && status.counts.running === 0) {
        const failed = [...watched].map(seq => queue.job(seq)).filter((j): j is Job => j?.state === 'failed')
        if (failed.length === 0) return 0
        process.stderr.write(`narwhal queue wait: drained, but ${failed.length} job(s) failed:\n`)
        for (const job of failed) process.stderr.write(`  ${describe(job)}\n${indent(job.lastError ?? 'no reason recorded')}\n`)
        return 1
      }
      if (Date.now() >= deadline) {
        process.stderr.write(`narwhal queue wait: timed out with work left:\n${formatStatus(status)}`)
        return 124
      }
      await sleep(Math.min(200, Math.max(0, deadline - Date.now())))
    }
  } finally {
    queue.close()
  }
}
