/**
 * `narwhal serve --workers N` with N ≥ 2: several processes answer on one port. One Node process
 * tops out well below nginx on narinfo request rates; N processes over the same WAL-mode SQLite
 * database (readers never wait, writers take turns within busy_timeout) go further.
 *
 * The primary serves nothing itself. It does, once, what must happen once per start: migrate the
 * database, the first start (key, token, the message printed once), empty store/tmp. Then it
 * runs the gc schedule (one process per data folder must: cache/gc-schedule.ts), forks the
 * workers (cli/cluster-worker.ts), merges their metrics for /metrics (server/cluster-metrics.ts),
 * restarts a worker that dies, with back-off, and on SIGTERM/SIGINT closes them all gracefully.
 *
 * node:cluster's default on Linux is round-robin: the primary accepts each connection and hands
 * it to the next worker, so connections spread evenly (the kernel's own choice among processes
 * sharing a socket is known to pile them on a few).
 */
import cluster, { type Worker } from 'node:cluster'
import { fileURLToPath } from 'node:url'
import pino, { type Logger } from 'pino'
import { openCache } from '../cache/open-cache.js'
import { startGcSchedule } from '../cache/gc-schedule.js'
import type { Config } from '../config/config.js'
import { serveClusterMetrics } from '../server/cluster-metrics.js'
import { CONFIG_ENV, SHUTDOWN_MESSAGE } from './cluster-protocol.js'
import { firstStart } from './first-start.js'

const WORKER_ENTRY = fileURLToPath(new URL('./cluster-worker.js', import.meta.url))

/** A worker that dies is restarted after this long, doubled after each further quick death… */
export const RESTART_FIRST_MS = 100
/** …up to this: a worker that cannot start (disk gone, database broken) is retried, not spun. */
export const RESTART_MAX_MS = 30_000
/** A worker that stayed up this long died of something new: its back-off starts over. */
export const STABLE_MS = 60_000

/** How long to wait before restarting a worker that died after `uptimeMs`; `previousMs` is the last wait of its slot. */
export function restartDelay (previousMs: number | undefined, uptimeMs: number): number {
  if (previousMs === undefined || uptimeMs >= STABLE_MS) return RESTART_FIRST_MS
  return Math.min(previousMs * 2, RESTART_MAX_MS)
}

/** One of the N places for a worker; a restarted worker takes the place of the one that died. */
interface Slot {
  index: number
  worker?: Worker
  startedAt: number
  /** The wait before the last restart, for the back-off; undefined before the first. */
  delayMs?: number
  restartTimer?: NodeJS.Timeout
}

export async function runCluster (config: Readonly<Config>): Promise<number> {
  const log: Logger = pino({ level: config.logLevel })
  const cache = openCache(config)
  // Uploads a crash or kill interrupted: once, before any worker serves (a worker restarted
  // later must not, its siblings have uploads in flight there).
  cache.blobs.emptyTmp()
  const message = firstStart(config, cache)
  if (cache.trustedKeys.size === 0) {
    log.warn('no trusted uploader key: every narinfo upload will be refused; configure --trusted-key NAME:BASE64')
  }
  // The workers open their own connections; the primary has no more use for this one.
  cache.db.close()

  const stopMetrics = serveClusterMetrics()
  cluster.setupPrimary({ exec: WORKER_ENTRY, args: [] })
  const stopGc = startGcSchedule(config.dataDir, config.gc, log)
  const slots: Slot[] = Array.from({ length: config.workers }, (_, index) => ({ index, startedAt: 0 }))
  let stopping = false
  /** Set once the gc schedule has stopped and any run in progress ended. */
  let gcStopped = false
  let everListening = false
  let exitCode = 0
  let finished: (code: number) => void = () => {}
  const done = new Promise<number>(resolve => { finished = resolve })

  const finishIfAllGone = (): void => {
    if (gcStopped && slots.every(s => s.worker === undefined)) {
      stopMetrics()
      log.info({ exitCode }, 'all workers stopped')
      finished(exitCode)
    }
  }

  const askToClose = (worker: Worker): void => {
    if (worker.isConnected()) worker.send({ type: SHUTDOWN_MESSAGE })
  }

  const fork = (slot: Slot): void => {
    slot.restartTimer = undefined
    slot.startedAt = Date.now()
    const worker = cluster.fork({ [CONFIG_ENV]: JSON.stringify(config) })
    slot.worker = worker
    const fields = { worker: slot.index, workerPid: worker.process.pid }
    worker.on('listening', () => {
      log.info(fields, 'worker listening')
      if (!everListening) {
        everListening = true
        // Printed when the server first answers, as with one process.
        if (message !== undefined) process.stdout.write(message + '\n')
      }
      // Asked to close while it was starting: only now is it sure to hear the message.
      if (stopping) askToClose(worker)
    })
    worker.on('error', (err) => { log.error({ ...fields, err }, 'worker IPC error') })
    worker.on('exit', (code, signal) => {
      slot.worker = undefined
      if (stopping) {
        log.info({ ...fields, code, signal }, 'worker stopped')
        finishIfAllGone()
        return
      }
      if (!everListening) {
        // Nothing ever served (a taken port, an unreadable data folder): retrying would only
        // repeat the error, and with one process the same start would have failed too.
        log.fatal({ ...fields, code, signal }, 'worker exited before the server ever listened; stopping')
        exitCode = 1
        stop()
        return
      }
      slot.delayMs = restartDelay(slot.delayMs, Date.now() - slot.startedAt)
      log.error({ ...fields, code, signal, restartInMs: slot.delayMs }, 'worker died; restarting it')
      slot.restartTimer = setTimeout(() => { fork(slot) }, slot.delayMs)
    })
  }

  const stop = (): void => {
    if (stopping) return
    stopping = true
    log.info('stopping: closing the workers gracefully')
    for (const slot of slots) {
      clearTimeout(slot.restartTimer)
      slot.restartTimer = undefined
    }
    stopGc()
      .catch((err: unknown) => { log.error({ err }, 'error while stopping the gc schedule') })
      .then(() => {
        gcStopped = true
        for (const slot of slots) if (slot.worker !== undefined) askToClose(slot.worker)
        finishIfAllGone()
      })
  }

  process.once('SIGTERM', stop)
  process.once('SIGINT', stop)
  for (const slot of slots) fork(slot)
  log.info({ workers: config.workers }, 'primary started')
  return await done
}
