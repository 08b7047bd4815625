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
import { closeSync } from 'node:fs'
import type { OutgoingHttpHeaders } from 'node:http'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { NarwhalError } from '../../errors.js'
import { NAR_FILE_PATTERN } from '../../nix/nar-url.js'
import { startNarUpload } from '../../cache/store-nar.js'
import { acceptBody, checkDeclaredLength } from '../body.js'
import { clientPaced, idleTimeoutMs } from '../idle-timeout.js'
import { answerPulledNar } from '../pulled-nar.js'
import { parseRange } from '../range.js'
import { readWhole, sendFileRange, SMALL_BODY_BYTES } from '../file-body.js'

const params = {
  type: 'object',
  properties: { file: { type: 'string', pattern: `^${NAR_FILE_PATTERN}$` } },
  required: ['file']
} as const

interface Params { file: string }

/** The route's URL pattern, as metrics label it. */
export const NAR_ROUTE = '/nar/:file'

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
// The common GET is lean: one prepared-statement lookup (only NARs the database records are
// served: a file without its row is a crashed commit or one garbage collection is removing),
// a synchronous open and fstat, then the body as file-body.ts sends it for its size. No
// thread-pool round trip before the headers: with a closure of many small NARs each hop (stat,
// open, read, close) cost more than the bytes.
function narDownloadRoute (app: FastifyInstance): void {
  app.route<{ Params: Params }>({
    method: ['GET', 'HEAD'],
    url: NAR_ROUTE,
    schema: { params },
    handler: async (request, reply) => {
      const fileHash = fileHashOf(request.params.file)
      let file = await openRecordedNar(app, request, fileHash)
      const { pullThrough } = app.narwhal
      // Not here, or its row outlived its file: an upstream may have it (a pulled narinfo names it).
      if (file === undefined && pullThrough !== undefined) {
        if (await answerPulledNar(pullThrough, fileHash, request, reply)) return reply
        file = await openRecordedNar(app, request, fileHash)
      }
      if (file === undefined) throw new NarwhalError('NARWHAL_NOT_FOUND', `nar/${request.params.file} is not in this cache`)
      const { fd, size } = file
      app.narwhal.access.narFile(fileHash)
      return await sendNar(request, reply, fileHash, fd, size)
    }
  })
}

/** The NAR's open file, when the database records it and the file on disk has its size; else undefined (and a log line for a damaged cache). */
async function openRecordedNar (app: FastifyInstance, request: FastifyRequest, fileHash: string): Promise<{ fd: number, size: number } | undefined> {
  const { metadata, blobs } = app.narwhal
  // Only a live file is served: a pending one is not committed yet, a deleting one is going.
  const found = await metadata.narFiles.get(fileHash)
  const row = found?.state === 'live' ? found : undefined
  const file = row === undefined ? undefined : blobs.openNar(fileHash)
  if (row === undefined || file === undefined) {
    if (row !== undefined) request.log.error({ fileHash }, 'NAR file recorded in the database is missing on disk')
    return undefined
  }
  if (file.size !== row.fileSize) {
    closeSync(file.fd)
    request.log.error({ fileHash, size: file.size, expected: row.fileSize }, 'NAR file on disk has the wrong size')
    return undefined
  }
  return file
}

/** The answer of a GET or HEAD of an open NAR file (whole, a range, or a 416); closes `fd`. */
async function sendNar (request: FastifyRequest, reply: FastifyReply, fileHash: string, fd: number, size: number): Promise<FastifyReply> {
  reply.headers(narHeaders(fileHash))
  const range = parseRange(request.headers.range, size)
  if (range.kind === 'unsatisfiable') {
    closeSync(fd)
    return reply.code(416).header('content-range', `bytes */${size}`).header('content-type', 'text/plain; charset=utf-8')
      .send('NARWHAL_BAD_REQUEST: the requested range is outside the file\n')
  }
  const start = range.kind === 'partial' ? range.start : 0
  const end = range.kind === 'partial' ? range.end : size - 1
  const length = end - start + 1
  if (range.kind === 'partial') reply.code(206).header('content-range', `bytes ${start}-${end}/${size}`)
  reply.header('content-length', length)
  if (request.method === 'HEAD' || size === 0) {
    closeSync(fd)
    return reply.send()
  }
  if (length <= SMALL_BODY_BYTES) return reply.send(readWhole(fd, start, length))
  // Larger bodies are written by file-body.ts's own loop, straight to the response: Fastify
  // sends no headers of a hijacked reply but still runs the onResponse hooks (metrics, log).
  reply.hijack()
  reply.raw.writeHead(reply.statusCode, reply.getHeaders() as OutgoingHttpHeaders)
  const failed = await sendFileRange(reply.raw, fd, start, length)
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
