/**
 * `narwhal serve`: migrate, set up on first start, listen, collect garbage on schedule, and shut
 * down cleanly on SIGTERM/SIGINT. With `workers` above 1 the same happens across several
 * processes (cli/cluster.ts); with 1, in this process alone, without node:cluster.
 */
import { startGcSchedule } from '../../cache/gc-schedule.js'
import { openCache } from '../../cache/open-cache.js'
import { cacheInfoText } from '../../nix/binary-cache-files.js'
import { firstStart } from '../first-start.js'
import { pullThroughFor, upstreamContext } from '../pull-through.js'
import { CACHE_OPTIONS, loadCacheConfig } from '../cache-options.js'
import { parse } from '../usage.js'
import { startStorageUpkeep } from '../storage-upkeep.js'

export async function serveCommand (args: string[]): Promise<number> {
  const { values } = parse(args, {
    ...CACHE_OPTIONS,
    listen: { type: 'string' },
    'trusted-key': { type: 'string', multiple: true },
    workers: { type: 'string' },
    upstream: { type: 'string', multiple: true },
    'upstream-key': { type: 'string', multiple: true }
  })
  const config = loadCacheConfig(values, {
    listen: values.listen,
    trustedKeys: values['trusted-key'],
    workers: values.workers,
    upstreams: values.upstream,
    upstreamKeys: values['upstream-key']
  })
  // Loaded only when asked for, so one process runs exactly as it did before workers existed.
  if (config.workers > 1) return await (await import('../cluster.js')).runCluster(config)
  // Loaded here, not at the top: the primary of `--workers N` serves nothing, and Fastify and the
  // routes cost it memory for nothing.
  const { buildApp } = await import('../../server/app.js')
  const cache = await openCache(config)
  const message = await firstStart(config, cache)
  const pullThrough = await pullThroughFor(config, cache)
  const app = buildApp({ config, metadata: cache.metadata, blobs: cache.blobs, trustedKeys: cache.trustedKeys, provenance: cache.provenance, audit: cache.audit, browse: cache.browse, ...upstreamContext(pullThrough) })
  // Uploads a crash or kill interrupted (this process is the only one serving the store), and the
  // bucket's nix-cache-info; an unreachable bucket is retried later instead of stopping the start.
  const upkeep = await startStorageUpkeep(cache.blobs, cacheInfoText(config.priority), app.log)
  if (cache.trustedKeys.size === 0) {
    app.log.warn('no trusted uploader key: every narinfo upload will be refused; configure --trusted-key NAME:BASE64')
  }
  await app.listen({ host: config.listen.host, port: config.listen.port })
  if (message !== undefined) process.stdout.write(message + '\n')
  if (config.upstreams.length > 0) app.log.info({ upstreams: config.upstreams.map(u => u.url) }, 'pulling through from upstream caches')
  const stopGc = startGcSchedule(config, config.gc, app.log, config.upstreams.map(u => u.url))
  const stop = (): void => {
    upkeep.stop()
    stopGc().then(async () => await app.close()).then(async () => await pullThrough?.close()).then(async () => await cache.close(),
      (err: unknown) => app.log.error({ err }, 'error while closing'))
  }
  process.once('SIGTERM', stop)
  process.once('SIGINT', stop)
  await new Promise<void>(resolve => app.server.once('close', () => resolve()))
  return 0
}
