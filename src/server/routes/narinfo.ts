/**
 * `<hash32>.narinfo`: the metadata of one store path.
 *
 * GET/HEAD answer from a single indexed lookup of the text rendered at upload time. PUT runs the
 * write rules in cache/accept-narinfo.ts; the hash part is checked against the nix32 alphabet by
 * the route schema before anything else happens.
 */
import type { FastifyInstance } from 'fastify'
import { acceptNarinfo } from '../../cache/accept-narinfo.js'
import { NarwhalError } from '../../errors.js'
import { HASH_PART_PATTERN } from '../../nix/store-path.js'
import { decodeBody, readBody } from '../body.js'

const params = {
  type: 'object',
  properties: { hash: { type: 'string', pattern: `^${HASH_PART_PATTERN}$` } },
  required: ['hash']
} as const

interface Params { hash: string }

export function narinfoRoutes (app: FastifyInstance): void {
  app.get<{ Params: Params }>('/:hash.narinfo', { schema: { params } }, async (request, reply) => {
    const text = app.narwhal.metadata.narinfoText(request.params.hash)
    if (text === undefined) {
      // Answered here rather than thrown: a miss is ordinary traffic (Nix asks for every path of
      // a closure before it uploads), and building an Error with its stack trace for each one
      // cost more than the lookup. Same status and body as the error handler gives.
      return reply.code(404).header('content-type', 'text/plain; charset=utf-8')
        .send(`NARWHAL_NOT_FOUND: ${request.params.hash}.narinfo is not in this cache\n`)
    }
    app.narwhal.access.narinfo(request.params.hash)
    return reply.header('content-type', 'text/x-nix-narinfo').send(text)
  })

  app.put<{ Params: Params }>('/:hash.narinfo', { schema: { params } }, async (request, reply) => {
    const { limits } = app.narwhal.config
    const received = await readBody(request, limits.narinfoBytes, 'narinfo', 'limits.narinfoBytes')
    const body = await decodeBody(received, request.headers['content-encoding'], limits.narinfoBytes, 'narinfo', 'limits.narinfoBytes')
    const text = body.toString('utf8')
    if (!Buffer.from(text, 'utf8').equals(body)) {
      throw new NarwhalError('NARWHAL_NARINFO_INVALID', 'narinfo is not valid UTF-8')
    }
    const result = acceptNarinfo(text, request.params.hash, app.narwhal.metadata, app.narwhal.trustedKeys)
    request.log.info({ hash: request.params.hash, result }, 'narinfo stored')
    return reply.code(result === 'created' ? 201 : 200).header('content-type', 'text/plain; charset=utf-8').send(`${result}\n`)
  })
}
