/**
 * The small protocol files that are not NARs, one table row per kind:
 *
 *   log/<drv base name>                           build logs (`nix store copy-log`, read by `nix log`)
 *   <hash32>.ls                                    NAR listings (`?write-nar-listing=true`)
 *   realisations/sha256:<hex>!<output>.doi         CA-derivation realisations, Nix 2.8 … 2.34
 *   build-trace-v2/<drv base name>/<output>.doi    the same from Nix 2.35 on
 *   debuginfo/<40 hex build id>                    links for dwarffs (`?index-debug-info=true`)
 *
 * Names are checked against the protocol's patterns before any lookup. Bodies are stored and
 * served by cache/aux-files.ts (as sent, JSON kinds must be JSON when not encoded). Uploads need
 * a push token like every write.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { Limits } from '../../config/config.js'
import { auxFile, putAuxFile, type AuxKind } from '../../cache/aux-files.js'
import { NarwhalError } from '../../errors.js'
import { HASH_PART_PATTERN, isValidStorePathName } from '../../nix/store-path.js'
import { readBody } from '../body.js'

interface AuxRoute {
  kind: AuxKind
  url: string
  /** The stored name from the request, or undefined when the name breaks the pattern. */
  name: (request: FastifyRequest) => string | undefined
  limit: keyof Limits
  contentType: string
  json: boolean
}

const HASH_PART = new RegExp(`^${HASH_PART_PATTERN}$`)
const OUTPUT_NAME = /^[a-zA-Z0-9+\-._?=]{1,211}$/

function drvBaseName (value: string): boolean {
  return value.endsWith('.drv') && HASH_PART.test(value.slice(0, 32)) && value[32] === '-' && isValidStorePathName(value.slice(33))
}

function wildcard (request: FastifyRequest): string {
  return (request.params as { '*': string })['*']
}

const ROUTES: AuxRoute[] = [
  {
    kind: 'log',
    url: '/log/*',
    name: r => { const n = wildcard(r); return drvBaseName(n) ? n : undefined },
    limit: 'logBytes',
    contentType: 'text/plain; charset=utf-8',
    json: false
  },
  {
    kind: 'ls',
    url: '/:hash.ls',
    name: r => { const h = (r.params as { hash: string }).hash; return HASH_PART.test(h) ? h : undefined },
    limit: 'listingBytes',
    contentType: 'application/json',
    json: true
  },
  {
    kind: 'realisation',
    url: '/realisations/*',
    name: r => { const n = wildcard(r); return /^sha256:[0-9a-f]{64}![a-zA-Z0-9+\-._?=]{1,211}\.doi$/.test(n) ? n : undefined },
    limit: 'smallFileBytes',
    contentType: 'application/json',
    json: true
  },
  {
    kind: 'realisation',
    url: '/build-trace-v2/*',
    name: r => {
      const n = wildcard(r)
      const [drv = '', output = '', ...rest] = n.split('/')
      return rest.length === 0 && drvBaseName(drv) && output.endsWith('.doi') && OUTPUT_NAME.test(output.slice(0, -4))
        ? `build-trace-v2/${n}`
        : undefined
    },
    limit: 'smallFileBytes',
    contentType: 'application/json',
    json: true
  },
  {
    kind: 'debuginfo',
    url: '/debuginfo/:id',
    name: r => { const id = (r.params as { id: string }).id; return /^[0-9a-f]{40}$/.test(id) ? id : undefined },
    limit: 'smallFileBytes',
    contentType: 'application/json',
    json: true
  }
]

function nameOrThrow (route: AuxRoute, request: FastifyRequest): string {
  const name = route.name(request)
  if (name === undefined) {
    throw new NarwhalError('NARWHAL_BAD_NAME', `${request.url.slice(0, 200)} is not a valid ${route.kind} name`)
  }
  return name
}

export function auxFileRoutes (app: FastifyInstance): void {
  const { metadata, config } = app.narwhal
  for (const route of ROUTES) {
    app.get(route.url, async (request, reply) => {
      const name = nameOrThrow(route, request)
      const file = await auxFile(metadata, route.kind, name)
      if (file === undefined) throw new NarwhalError('NARWHAL_NOT_FOUND', `no ${route.kind} ${name} in this cache`)
      reply.header('content-type', file.contentType)
      if (file.contentEncoding !== null) reply.header('content-encoding', file.contentEncoding)
      return reply.send(file.body)
    })

    app.put(route.url, async (request, reply) => {
      const name = nameOrThrow(route, request)
      const body = await readBody(request, config.limits[route.limit], route.kind, `limits.${route.limit}`)
      await putAuxFile(metadata, route.kind, name, { body, encoding: request.headers['content-encoding'], contentType: route.contentType, json: route.json })
      return reply.code(201).header('content-type', 'text/plain; charset=utf-8').send('stored\n')
    })
  }
}
