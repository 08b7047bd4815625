/**
 * Reading small request bodies with a limit. NAR bodies are never read this way: they stream
 * (see storage/nar-ingest.ts).
 */
import type { FastifyRequest } from 'fastify'
import { NarwhalError } from '../errors.js'

/** The declared Content-Length, refused up front when it is over `limit`. */
export function checkDeclaredLength (request: FastifyRequest, limit: number, what: string, limitName: string): void {
  const declared = request.headers['content-length']
  if (declared !== undefined && Number(declared) > limit) {
    throw new NarwhalError('NARWHAL_TOO_LARGE', `${what} of ${declared} bytes is larger than the limit of ${limit} bytes (${limitName})`)
  }
}

export async function readBody (request: FastifyRequest, limit: number, what: string, limitName: string): Promise<Buffer> {
  checkDeclaredLength(request, limit, what, limitName)
  const chunks: Buffer[] = []
  let length = 0
  for await (const chunk of request.raw as AsyncIterable<Buffer>) {
    length += chunk.length
    if (length > limit) throw new NarwhalError('NARWHAL_TOO_LARGE', `${what} is larger than the limit of ${limit} bytes (${limitName})`)
    chunks.push(chunk)
  }
  return Buffer.concat(chunks)
}
