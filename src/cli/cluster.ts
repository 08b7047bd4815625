/**
 * `narwhal serve --workers N` with N ≥ 2: several processes answer on one port. One Node process
 * tops out well below nginx on narinfo request rates; N processes over the same WAL-mode SQLite
 * database (readers never wait, writers take turns within busy_timeout) go further.
 *
 * The primary serves nothing itself. It does, once, what must happen once per start: migrate the
 * database, the first start (key, token, the message printed once), empty store/tmp. Then it
 * runs the gc schedule (one process per data folder must: cache/gc-schedule.ts), forks the
 * workers (cli/cluster-worker.ts), merges their metrics for /metrics (server/cluster-metrics.ts),
 * gives out the turns to fetch upstream NARs (cli/nar-fetch-claims.ts),
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
import { cacheInfoText } from '../nix/binary-cache-files.js'
import { startGcSchedule } from '../cache/gc-schedule.js'
import type { Config } from '../config/config.js'
import { serveClusterMetrics } from '../server/cluster-metrics.js'
import { FileBlobStore } from '../storage/file-blob-store.js'
import { layoutFor } from '../storage/layout.js'
import { CONFIG_ENV, SHUTDOWN_MESSAGE } from './cluster-protocol.js'
import { firstStart } from './first-start.js'
import { serveNarFetchClaims } from './nar-fetch-claims.js'
import { startStorageUpkeep } from './storage-upkeep.js'

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
  const { message, stopUpkeep } = await setUpOnce(config, log)
  const stopMetrics = serveClusterMetrics()
  // One upstream fetch per NAR across the workers (upstream/fetch-claims.ts).
  const stopClaims = serveNarFetchClaims()
  cluster.setupPrimary({ exec: WORKER_ENTRY, args: [] })
  const stopGc = startGcSchedule(config, config.gc, log, config.upstreams.map(u => u.url))
  const workers = new Workers(config, log, message, async () => { await stopUpkeep(); await stopGc() })
  process.once('SIGTERM', () => { workers.stop() })
  process.once('SIGINT', () => { workers.stop() })
  workers.start()
  log.info({ workers: config.workers }, 'primary started')
  const exitCode = await workers.done
  stopMetrics()
  stopClaims()
  return exitCode
}

/**
 * What happens once per start, before any worker: returns the first start's message, if any, and
 * how to stop the storage upkeep (retried here in the primary while the bucket cannot be reached).
 */
async function setUpOnce (config: Readonly<Config>, log: Logger): Promise<{ message: string | undefined, stopUpkeep: () => Promise<void> }> {
  const cache = await openCache(config)
  const message = await firstStart(config, cache)
  if (cache.trustedKeys.size === 0) {
    log.warn('no trusted uploader key: every narinfo upload will be refused; configure --trusted-key NAME:BASE64')
  }
  // Uploads a crash or kill interrupted: once, before any worker serves (a worker restarted
  // later must not, its siblings have uploads in flight there), and the bucket's nix-cache-info.
  const upkeep = await startStorageUpkeep(cache.blobs, cacheInfoText(config.priority), log)
  // The workers open their own connections; the primary needs this one only until the upkeep is done.
  let closed: Promise<void> | undefined
  const close = async (): Promise<void> => { closed ??= cache.close(); await closed }
  upkeep.done.then(close).catch((err: unknown) => log.warn({ err }, 'closing the primary\'s cache connections failed'))
  return { message, stopUpkeep: async () => { upkeep.stop(); await close() } }
}

/** The N workers: forked, restarted with back-off when one dies, closed gracefully on stop(). */
class Workers {
  /** Resolves with the exit code once every worker is gone and the gc schedule stopped. */
  readonly done: Promise<number>
  private readonly slots: Slot[]
  private stopping = false
  /** Set once the gc schedule has stopped and any run in progress ended. */
  private gcStopped = false
  private everListening = false
  private exitCode = 0
  private finished: (code: number) => void = () => {}

  constructor (private readonly config: Readonly<Config>, private readonly log: Logger,
    private readonly message: string | undefined, private readonly stopGc: () => Promise<void>) {
    this.slots = Array.from({ length: config.workers }, (_, index) => ({ index, startedAt: 0 }))
    this.done = new Promise<number>(resolve => { this.finished = resolve })
  }

  start (): void {
    for (const slot of this.slots) this.fork(slot)
  }

  stop (): void {
    if (this.stopping) return
    this.stopping = true
    this.log.info('stopping: closing the workers gracefully')
    for (const slot of this.slots) {
      clearTimeout(slot.restartTimer)
      slot.restartTimer = undefined
    }
    this.stopGc()
      .catch((err: unknown) => { this.log.error({ err }, 'error while stopping the gc schedule') })
      .then(() => {
        this.gcStopped = true
        for (const slot of this.slots) if (slot.worker !== undefined) askToClose(slot.worker)
        this.finishIfAllGone()
      })
  }

  private fork (slot: Slot): void {
    slot.restartTimer = undefined
    slot.startedAt = Date.now()
    const worker = cluster.fork({ [CONFIG_ENV]: JSON.stringify(this.config) })
    slot.worker = worker
    const fields = { worker: slot.index, workerPid: worker.process.pid }
    worker.on('listening', () => { this.listening(worker, fields) })
    worker.on('error', (err) => { this.log.error({ ...fields, err }, 'worker IPC error') })
    worker.on('exit', (code, signal) => { this.exited(slot, { ...fields, code, signal }, worker.process.pid) })
  }

  private listening (worker: Worker, fields: object): void {
    this.log.info(fields, 'worker listening')
    if (!this.everListening) {
      this.everListening = true
      // Printed when the server first answers, as with one process.
      if (this.message !== undefined) process.stdout.write(this.message + '\n')
    }
    // Asked to close while it was starting: only now is it sure to hear the message.
    if (this.stopping) askToClose(worker)
  }

  private exited (slot: Slot, fields: object, pid: number | undefined): void {
    slot.worker = undefined
    this.removeUploadsOf(pid, fields)
    if (this.stopping) {
      this.log.info(fields, 'worker stopped')
      this.finishIfAllGone()
      return
    }
    if (!this.everListening) {
      // Nothing ever served (a taken port, an unreadable data folder): retrying would only
      // repeat the error, and with one process the same start would have failed too.
      this.log.fatal(fields, 'worker exited before the server ever listened; stopping')
      this.exitCode = 1
      this.stop()
      return
    }
    slot.delayMs = restartDelay(slot.delayMs, Date.now() - slot.startedAt)
    this.log.error({ ...fields, restartInMs: slot.delayMs }, 'worker died; restarting it')
    slot.restartTimer = setTimeout(() => { this.fork(slot) }, slot.delayMs)
  }

  /**
   * A worker killed mid-upload (or mid-fetch of an upstream NAR) left its temp file in store/tmp,
   * which only a start would sweep: removed now, its siblings' uploads untouched. A bucket's
   * unfinished uploads carry no process; its sweep removes them at the next start (SWEEP_GRACE_MS).
   */
  private removeUploadsOf (pid: number | undefined, fields: object): void {
    if (pid === undefined || this.config.storage.url !== null) return
    try {
      const removed = new FileBlobStore(layoutFor(this.config.dataDir)).removeTempFilesOf(pid)
      if (removed > 0) this.log.warn({ ...fields, removed }, 'removed the temp files of a worker\'s interrupted uploads')
    } catch (err) {
      this.log.error({ ...fields, err }, 'could not remove a dead worker\'s temp files; the next start sweeps them')
    }
  }

  private finishIfAllGone (): void {
    if (this.gcStopped && this.slots.every(s => s.worker === undefined)) {
      this.log.info({ exitCode: this.exitCode }, 'all workers stopped')
      this.finished(this.exitCode)
    }
  }
}

function askToClose (worker: Worker): void {
  if (worker.isConnected()) worker.send({ type: SHUTDOWN_MESSAGE })
}
