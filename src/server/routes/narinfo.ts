/**
 * `<hash32>.narinfo`: the metadata of one store path.
 *
 * GET/HEAD answer with the text rendered at upload time, from memory or one indexed lookup
 * (NarinfoStore.body). Most GETs never reach this route: server/fast-reads.ts answers them
 * before Fastify, with the same status, headers and body. PUT runs the write rules in
 * cache/accept-narinfo.ts; the hash part is checked against the nix32 alphabet by the route
 * schema before anything else happens.
 */
import type { FastifyInstance } from 'fastify'
import { acceptNarinfo } from '../../cache/accept-narinfo.js'
import { NarwhalError } from '../../errors.js'
import { CONTENT_TYPE } from '../../nix/binary-cache-files.js'
import { HASH_PART_PATTERN } from '../../nix/store-path.js'
import { noteWrite, writeOrigin } from '../audit.js'
import { decodeBody, readBody } from '../body.js'

const params = {
  type: 'object',
  properties: { hash: { type: 'string', pattern: `^${HASH_PART_PATTERN}$` } },
  required: ['hash']
} as const

interface Params { hash: string }

/** The route's URL pattern, as metrics label it. */
export const NARINFO_ROUTE = '/:hash.narinfo'
export const NARINFO_TYPE = CONTENT_TYPE.narinfo
export const MISS_TYPE = 'text/plain; charset=utf-8'

/** The body of a miss: the error handler's form of NARWHAL_NOT_FOUND. */
export function narinfoMissBody (hashPart: string): string {
  return `NARWHAL_NOT_FOUND: ${hashPart}.narinfo is not in this cache\n`
}

export function narinfoRoutes (app: FastifyInstance): void {
  app.get<{ Params: Params }>(NARINFO_ROUTE, { schema: { params } }, async (request, reply) => {
    const body = await app.narwhal.metadata.narinfos.body(request.params.hash) ??
      await app.narwhal.pullThrough?.narinfo(request.params.hash, request.log)
    if (body === undefined) {
      // Answered here rather than thrown: a miss is ordinary traffic (Nix asks for every path of
      // a closure before it uploads), and building an Error with its stack trace for each one
      // cost more than the lookup. Same status and body as the error handler gives.
      return reply.code(404).header('content-type', MISS_TYPE).send(narinfoMissBody(request.params.hash))
    }
    app.narwhal.access.narinfo(request.params.hash)
    return reply.header('content-type', NARINFO_TYPE).send(body)
  })

  app.put<{ Params: Params }>(NARINFO_ROUTE, { schema: { params } }, async (request, reply) => {
    const { limits } = app.narwhal.config
    const received = await readBody(request, limits.narinfoBytes, 'narinfo', 'limits.narinfoBytes')
    const body = await decodeBody(received, request.headers['content-encoding'], limits.narinfoBytes, 'narinfo', 'limits.narinfoBytes')
    const text = body.toString('utf8')
    if (!Buffer.from(text, 'utf8').equals(body)) {
      throw new NarwhalError('NARWHAL_NARINFO_INVALID', 'narinfo is not valid UTF-8')
    }
    const { metadata, trustedKeys, provenance, pullThrough } = app.narwhal
    // References an upstream holds count as present (write rule 5); ask for those not known yet.
    await pullThrough?.lookupReferences(text, request.log)
    const result = await acceptNarinfo(text, request.params.hash, metadata, trustedKeys, { provenance, origin: writeOrigin(request) }, pullThrough !== undefined)
    noteWrite(request, await metadata.narinfos.storePathOf(request.params.hash) ?? `${request.params.hash}.narinfo`, result)
    request.log.info({ hash: request.params.hash, result }, 'narinfo stored')
    return reply.code(result === 'created' ? 201 : 200).header('content-type', 'text/plain; charset=utf-8').send(`${result}\n`)
  })
}
