/**
 * A NAR the cache does not hold but an upstream narinfo it serves names (cache/pull-through.ts):
 * HEAD answers from the narinfo's FileSize without fetching anything (`nix copy --to` probes
 * NARs it may upload), a GET starts or joins the one fetch of it. Used by routes/nar.ts.
 */
import type { OutgoingHttpHeaders } from 'node:http'
import type { FastifyReply, FastifyRequest } from 'fastify'
import type { PullThrough } from '../cache/pull-through.js'
import { narHeaders } from './routes/nar.js'

/**
 * True when the request was answered here; false when the route goes on as usual: the NAR is
 * stored now (or was never named by an upstream narinfo, and the route answers 404).
 */
export async function answerPulledNar (pullThrough: PullThrough, fileHash: string, request: FastifyRequest, reply: FastifyReply): Promise<boolean> {
  if (request.method === 'HEAD') {
    const size = await pullThrough.narFileSize(fileHash)
    if (size === undefined) return false
    await reply.headers(narHeaders(fileHash)).header('content-length', size).send()
    return true
  }
  // A range is served from the disk once the whole NAR is stored and verified.
  const pulled = await pullThrough.nar(fileHash, request.log, { stream: request.headers.range === undefined })
  if (pulled === undefined || pulled.kind === 'stored') return false
  reply.hijack()
  reply.raw.writeHead(200, { ...reply.getHeaders(), ...narHeaders(fileHash), 'content-length': pulled.fileSize } as OutgoingHttpHeaders)
  await pulled.sendTo(reply.raw)
  return true
}
