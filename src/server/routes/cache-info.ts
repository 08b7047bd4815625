/**
 * `nix-cache-info`: what Nix reads first when it opens the cache.
 *
 *   StoreDir: /nix/store
 *   WantMassQuery: 1
 *   Priority: 30
 *
 * Nix 2.8 caches this answer forever, so it must be right the first time. Nix PUTs the file only
 * when the GET says it is missing, which never happens here; a PUT is still answered 2xx when its
 * StoreDir matches, and changes nothing.
 */
import type { FastifyInstance } from 'fastify'
import { NarwhalError } from '../../errors.js'
import { STORE_DIR } from '../../nix/store-path.js'
import { cacheInfoText, CONTENT_TYPE } from '../../nix/binary-cache-files.js'
import { readBody } from '../body.js'

export function cacheInfoRoutes (app: FastifyInstance): void {
  const text = cacheInfoText(app.narwhal.config.priority)

  app.get('/nix-cache-info', async (_request, reply) => {
    return reply.header('content-type', CONTENT_TYPE.cacheInfo).send(text)
  })

  app.put('/nix-cache-info', async (request, reply) => {
    const limit = app.narwhal.config.limits.smallFileBytes
    const body = (await readBody(request, limit, 'nix-cache-info', 'limits.smallFileBytes')).toString('utf8')
    for (const line of body.split('\n')) {
      const colon = line.indexOf(':')
      if (colon < 0 || line.slice(0, colon) !== 'StoreDir') continue
      const storeDir = line.slice(colon + 1).trim()
      if (storeDir !== STORE_DIR) {
        throw new NarwhalError('NARWHAL_BAD_REQUEST', `nix-cache-info: this cache is for StoreDir ${STORE_DIR}, not ${storeDir}`)
      }
    }
    return reply.code(204).send()
  })
}
