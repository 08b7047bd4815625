/**
 * Reading small request bodies with a limit. NAR bodies are never read this way: they stream
 * (see storage/nar-ingest.ts).
 */
import type { FastifyRequest } from 'fastify'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { NarwhalError } from '../errors.js'
import { VERIFIABLE_COMPRESSIONS } from '../nix/compression.js'
import { createDecoder } from '../nix/codecs.js'

/**
 * Requests that sent `Expect: 100-continue` and have not been told to go on. Node would answer
 * `100 Continue` before any hook ran, inviting the body of an upload that auth or a limit is about
 * to refuse; app.ts takes that answer over (the server's 'checkContinue' event) and a route sends
 * it through acceptBody() only once it has decided to read the body.
 */
const awaitingContinue = new WeakMap<IncomingMessage, ServerResponse>()

export function holdContinue (request: IncomingMessage, response: ServerResponse): void {
  awaitingContinue.set(request, response)
}

/** Tells a client waiting on `Expect: 100-continue` to send its body; a no-op otherwise. */
export function acceptBody (request: FastifyRequest): void {
  const response = awaitingContinue.get(request.raw)
  if (response === undefined) return
  awaitingContinue.delete(request.raw)
  response.writeContinue()
}

/** The declared Content-Length, refused up front when it is over `limit`. */
export function checkDeclaredLength (request: FastifyRequest, limit: number, what: string, limitName: string): void {
  const declared = request.headers['content-length']
  if (declared !== undefined && Number(declared) > limit) {
    throw new NarwhalError('NARWHAL_TOO_LARGE', `${what} of ${declared} bytes is larger than the limit of ${limit} bytes (${limitName})`)
  }
}

export async function readBody (request: FastifyRequest, limit: number, what: string, limitName: string): Promise<Buffer> {
  checkDeclaredLength(request, limit, what, limitName)
  acceptBody(request)
  const chunks: Buffer[] = []
  let length = 0
  for await (const chunk of request.raw as AsyncIterable<Buffer>) {
    length += chunk.length
    if (length > limit) throw new NarwhalError('NARWHAL_TOO_LARGE', `${what} is larger than the limit of ${limit} bytes (${limitName})`)
    chunks.push(chunk)
  }
  return Buffer.concat(chunks)
}

/**
 * Undoes the Content-Encoding Nix 2.32+ puts on narinfos with `?narinfo-compression=…`. The
 * decoded size is capped as well, so a small compressed body cannot expand without bound.
 */
export async function decodeBody (body: Buffer, encoding: string | undefined, limit: number, what: string, limitName: string): Promise<Buffer> {
  if (encoding === undefined || encoding === '' || encoding === 'identity' || encoding === 'none') return body
  const method = VERIFIABLE_COMPRESSIONS.find(m => m === encoding)
  if (method === undefined) {
    throw new NarwhalError('NARWHAL_UNSUPPORTED_COMPRESSION', `${what}: Content-Encoding ${encoding} is not one of ${VERIFIABLE_COMPRESSIONS.join(', ')}`)
  }
  const chunks: Buffer[] = []
  let length = 0
  // A decoder with a sink (not a Transform) so that the limit stops decompression itself: a
  // bzip2 Transform decodes every block of its input at once, and 64 KiB of bzip2 can be
  // thousands of blocks of 46 MB each.
  const decoder = createDecoder(method, (output) => {
    length += output.length
    if (length > limit) throw new NarwhalError('NARWHAL_TOO_LARGE', `${what} decompresses to more than the limit of ${limit} bytes (${limitName})`)
    chunks.push(Buffer.from(output)) // the zstd decoder reuses its output buffer
  })
  try {
    await decoder.write(body)
    await decoder.end()
  } catch (err) {
    if (err instanceof NarwhalError) throw err
    throw new NarwhalError('NARWHAL_BAD_REQUEST', `${what}: body is not valid ${method} data (Content-Encoding: ${encoding})`)
  } finally {
    decoder.close()
  }
  return Buffer.concat(chunks)
}
