/**
 * One worker of `narwhal serve --workers N`, forked by the primary (cli/cluster.ts); never run by
 * hand. It takes the configuration the primary loaded (so every process serves the same one, even
 * if the file changed since), opens the cache the primary already migrated and set up, without
 * emptying store/tmp (its siblings have uploads in flight there), and listens on the shared port.
 *
 * It closes gracefully (in-flight requests finish, pending read times are written, the database
 * is closed) when the primary asks, on SIGTERM/SIGINT, and when the primary is gone: a cluster
 * worker whose IPC channel closes gets 'disconnect', and must not outlive its primary.
 */
import cluster from 'node:cluster'
import type { Config } from '../config/config.js'
import { joinClusterMetrics } from '../server/cluster-metrics.js'
import { CONFIG_ENV, SHUTDOWN_MESSAGE } from './cluster-protocol.js'

async function runWorker (): Promise<void> {
  // Before the slow imports below: the primary's metric requests must get an answer at once.
  joinClusterMetrics()
  let closeRequested = false
  let close = (): void => { closeRequested = true }
  // Listened for from the start; the primary repeats the message when a worker that was still
  // starting reports listening, in case it came before this line ran.
  process.on('message', (message: unknown) => {
    if (typeof message === 'object' && message !== null && (message as { type?: unknown }).type === SHUTDOWN_MESSAGE) close()
  })
  // The IPC channel closed: the primary is gone (kill -9, a crash) or this worker let go of it.
  // Node's own listener, which runs right after this event, would exit on the spot when the
  // disconnect was not asked for; marking it expected lets requests in flight finish and pending
  // read times be written first.
  cluster.worker?.once('disconnect', () => {
    if (cluster.worker !== undefined) cluster.worker.exitedAfterDisconnect = true
    close()
  })
  process.once('SIGTERM', () => { close() })
  process.once('SIGINT', () => { close() })

  const text = process.env[CONFIG_ENV]
  if (text === undefined) throw new Error(`${CONFIG_ENV} is not set: this file is started by narwhal serve --workers N, not by hand`)
  // Validated by the primary's loadConfig; frozen as loadConfig freezes it.
  const config = Object.freeze(JSON.parse(text) as Config)
  // Loaded only now, so that the lines above run within milliseconds of the fork.
  const { openCache } = await import('../cache/open-cache.js')
  const { buildApp } = await import('../server/app.js')
  const { pullThroughFor, upstreamContext } = await import('./pull-through.js')
  const cache = await openCache(config)
  const { narFetchClaimsFromPrimary } = await import('./nar-fetch-claims.js')
  const pullThrough = await pullThroughFor(config, cache, undefined, narFetchClaimsFromPrimary())
  const app = buildApp({ config, metadata: cache.metadata, blobs: cache.blobs, trustedKeys: cache.trustedKeys, provenance: cache.provenance, audit: cache.audit, browse: cache.browse, ...upstreamContext(pullThrough) },
    { clusterWorker: true })

  let closing: Promise<void> | undefined
  close = () => {
    closing ??= app.close()
      .catch((err: unknown) => { app.log.error({ err }, 'error while closing') })
      .then(async () => { await pullThrough?.close() })
      .then(async () => { await cache.close() })
      // The IPC channel is what keeps a worker alive once its server is closed; without it the
      // process ends by itself.
      .finally(() => { if (process.connected) process.disconnect() })
  }
  if (closeRequested) {
    close()
    return
  }
  await app.listen({ host: config.listen.host, port: config.listen.port })
}

runWorker().catch((err: unknown) => {
  process.stderr.write(`narwhal worker ${process.pid}: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`)
  process.exitCode = 1
  if (process.connected) process.disconnect()
})
