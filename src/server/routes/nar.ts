/**
 * `nar/<filehash52>.nar[.ext]`: NAR files, content-addressed by the SHA-256 of their bytes.
 *
 * GET/HEAD stream the file exactly as stored, with Content-Length, Range support, an immutable
 * Cache-Control and no transport Content-Encoding (Nix would decompress twice). The file is
 * checked before any header is sent, so a missing file is a clean 404, never a truncated 200.
 *
 * PUT verifies while the bytes arrive (cache/store-nar.ts startNarUpload) and records the NAR only after it
 * was proven to hash to its name and to decompress to a well-formed NAR.
 */
import type { OutgoingHttpHeaders } from 'node:http'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { NarwhalError } from '../../errors.js'
import { NAR_FILE_PATTERN } from '../../nix/nar-url.js'
import { openServedNar, type BlobBody, type ByteRange, type ServedNar } from '../../cache/nar-reads.js'
import { startNarUpload } from '../../cache/store-nar.js'
import { acceptBody, checkDeclaredLength } from '../body.js'
import { clientPaced, idleTimeoutMs } from '../idle-timeout.js'
import { answerPulledNar } from '../pulled-nar.js'
import { parseRange, type RangeAnswer } from '../range.js'

const params = {
  type: 'object',
  properties: { file: { type: 'string', pattern: `^${NAR_FILE_PATTERN}$` } },
  required: ['file']
} as const

interface Params { file: string }

/** The route's URL pattern, as metrics label it. */
export const NAR_ROUTE = '/nar/:file'

/**
 * Bodies up to this size are read whole into a buffer of their own and sent in one write (and
 * kept by the fast path, server/fast-reads.ts); larger ones are streamed (BlobBody.send).
 */
export const SMALL_BODY_BYTES = 64 * 1024

/** The headers of every answer with a NAR's bytes but its length (server/fast-reads.ts sends the same). */
export function narHeaders (fileHash: string): Record<string, string> {
  return {
    'content-type': 'application/x-nix-nar',
    'accept-ranges': 'bytes',
    'cache-control': 'public, max-age=31536000, immutable',
    etag: `"${fileHash}"`
  }
}

function fileHashOf (file: string): string {
  return file.slice(0, 52)
}

export function narRoutes (app: FastifyInstance): void {
  narDownloadRoute(app)
  narUploadRoute(app)
}

// GET and HEAD as one route rather than Fastify's generated HEAD route, which answers a reply
// sent without a payload with Content-Length: 0 (and would read a streamed file to its end);
// a HEAD must state the file's length without reading its bytes.
//
// The common GET is lean: one prepared-statement lookup and, from the folder, a synchronous open
// and fstat (cache/nar-reads.ts, storage/file-blob-store.ts), then the body as the store sends it
// for its size. No thread-pool round trip before the headers: with a closure of many small NARs
// each hop (stat, open, read, close) cost more than the bytes.
function narDownloadRoute (app: FastifyInstance): void {
  app.route<{ Params: Params }>({
    method: ['GET', 'HEAD'],
    url: NAR_ROUTE,
    schema: { params },
    handler: async (request, reply) => {
      const fileHash = fileHashOf(request.params.file)
      // The Range header, read against the recorded size once it is known.
      const asked: { range: RangeAnswer } = { range: { kind: 'whole' } }
      const chooseRange = (fileSize: number): ByteRange | undefined => {
        asked.range = parseRange(request.headers.range, fileSize)
        return asked.range.kind === 'partial' ? { start: asked.range.start, end: asked.range.end } : undefined
      }
      let nar = await openNar(app, request, fileHash, chooseRange)
      const { pullThrough } = app.narwhal
      // Not here, or its row outlived its file: an upstream may have it (a pulled narinfo names it).
      if (nar === undefined && pullThrough !== undefined) {
        if (await answerPulledNar(pullThrough, fileHash, request, reply)) return reply
        nar = await openNar(app, request, fileHash, chooseRange)
      }
      if (nar === undefined) throw new NarwhalError('NARWHAL_NOT_FOUND', `nar/${request.params.file} is not in this cache`)
      app.narwhal.access.narFile(fileHash)
      if (nar.kind === 'redirect') {
        // 307 keeps the method: a HEAD stays a HEAD. The URL expires: no cache may keep the answer.
        return reply.code(307).header('location', nar.url).header('cache-control', 'no-store').send()
      }
      return await sendNar(request, reply, fileHash, nar.body, asked.range)
    }
  })
}

/** The served NAR (cache/nar-reads.ts), or undefined (and a log line for a damaged cache). */
async function openNar (app: FastifyInstance, request: FastifyRequest, fileHash: string,
  chooseRange: (fileSize: number) => ByteRange | undefined): Promise<Exclude<ServedNar, { kind: 'not-recorded' | 'damaged' }> | undefined> {
  const nar = await openServedNar(app.narwhal, fileHash, chooseRange)
  if (nar.kind === 'damaged') request.log.error(nar.detail, nar.reason)
  return nar.kind === 'not-recorded' || nar.kind === 'damaged' ? undefined : nar
}

/** The answer of a GET or HEAD of a NAR's body (whole, a range, or a 416); ends `body`. */
async function sendNar (request: FastifyRequest, reply: FastifyReply, fileHash: string, body: BlobBody, range: RangeAnswer): Promise<FastifyReply> {
  const { size } = body
  reply.headers(narHeaders(fileHash))
  if (range.kind === 'unsatisfiable') {
    body.close()
    return reply.code(416).header('content-range', `bytes */${size}`).header('content-type', 'text/plain; charset=utf-8')
      .send('NARWHAL_BAD_REQUEST: the requested range is outside the file\n')
  }
  if (range.kind === 'partial') reply.code(206).header('content-range', `bytes ${range.start}-${range.end}/${size}`)
  reply.header('content-length', body.length)
  if (request.method === 'HEAD' || body.length === 0) {
    body.close()
    return reply.send()
  }
  if (body.length <= SMALL_BODY_BYTES) return reply.send(await body.read())
  // Larger bodies are written by the store's own loop, straight to the response: Fastify sends
  // no headers of a hijacked reply but still runs the onResponse hooks (metrics, log).
  reply.hijack()
  reply.raw.writeHead(reply.statusCode, reply.getHeaders() as OutgoingHttpHeaders)
  const failed = await body.send(reply.raw)
  if (failed !== undefined) request.log.error({ fileHash, err: failed }, 'NAR file could not be read; the download was cut off')
  return reply
}

function narUploadRoute (app: FastifyInstance): void {
  const { config } = app.narwhal
  const idleMs = idleTimeoutMs(config)
  app.put<{ Params: Params }>(NAR_ROUTE, { schema: { params } }, async (request, reply) => {
    const fileHash = fileHashOf(request.params.file)
    checkDeclaredLength(request, config.limits.narBytes, 'NAR file', 'limits.narBytes')
    const declaredBytes = Number(request.headers['content-length'] ?? 0) || 0
    const upload = await startNarUpload(fileHash, app.narwhal, config.limits, declaredBytes)
    acceptBody(request)
    const outcome = await upload.receive(clientPaced(request.raw as AsyncIterable<Buffer>, request.raw, idleMs))
    if (outcome.result === 'unchanged') {
      return reply.code(200).header('content-type', 'text/plain; charset=utf-8').send('unchanged\n')
    }
    const { nar } = outcome
    request.log.info({ fileHash, compression: nar.compression, fileSize: nar.fileSize, narSize: nar.narSize }, 'NAR stored')
    return reply.code(201).header('content-type', 'text/plain; charset=utf-8').send('created\n')
  })
}
