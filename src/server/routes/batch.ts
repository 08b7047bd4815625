/**
 * narwhal's batch API for the pusher (wire types and rules: src/api/v1.ts).
 *
 *   POST /api/v1/missing-paths   which of these hash parts have no narinfo here (nor upstream)
 *   POST /api/v1/upload-batch    multipart: NARs and narinfos, in order
 *
 * The batch route does not have rules of its own: each part goes through exactly the code of the
 * single PUT it stands for (cache/store-nar.ts putNar for NARs, cache/accept-narinfo.ts
 * acceptNarinfo for narinfos), so a batch is
 * verified exactly like the PUTs `nix copy` makes. @fastify/multipart is registered inside this
 * plugin's scope only: every other route keeps buildApp's "read nothing" body parser.
 */
import multipart, { type Multipart } from '@fastify/multipart'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import {
  MAX_BATCH_PARTS, MAX_MISSING_QUERY, MISSING_PATHS_ROUTE, UPLOAD_BATCH_ROUTE,
  type BatchPartResult, type MissingPathsResponse, type UploadBatchResponse
} from '../../api/v1.js'
import { acceptNarinfo } from '../../cache/accept-narinfo.js'
import { NarwhalError, isNarwhalError } from '../../errors.js'
import { parseNarUrl } from '../../nix/nar-url.js'
import { HASH_PART_PATTERN, isValidHashPart } from '../../nix/store-path.js'
import { putNar } from '../../cache/store-nar.js'
import { recordPart, writeOrigin } from '../audit.js'
import { acceptBody, readBody } from '../body.js'
import { awaitClient, clientPaced, idleTimeoutMs } from '../idle-timeout.js'

const NARINFO_PART = new RegExp(`^(${HASH_PART_PATTERN})\\.narinfo$`)

async function readLimited (stream: AsyncIterable<Buffer>, limit: number): Promise<Buffer> {
  const chunks: Buffer[] = []
  let length = 0
  for await (const chunk of stream) {
    length += chunk.length
    if (length > limit) throw new NarwhalError('NARWHAL_TOO_LARGE', `narinfo is larger than the limit of ${limit} bytes (limits.narinfoBytes)`)
    chunks.push(chunk)
  }
  return Buffer.concat(chunks)
}

/**
 * A multipart body that does not parse (busboy's "Unexpected end of multipart data", "Malformed
 * part header", …) is the client's fault: 400, never 500. Errors that already carry a 4xx status
 * (@fastify/multipart's limits) keep it.
 */
function multipartError (err: unknown): unknown {
  if (isNarwhalError(err)) return err
  const status = (err as { statusCode?: unknown } | null)?.statusCode
  if (typeof status === 'number' && status >= 400 && status < 500) return err
  const reason = err instanceof Error ? err.message.slice(0, 200) : 'unreadable'
  return new NarwhalError('NARWHAL_BAD_REQUEST', `upload-batch: the multipart body is malformed (${reason})`)
}

/**
 * A part's bytes, with a parse error of the body around them reported by multipartError. It has
 * no return(): a reader that stops early must not destroy the part, which drain() still reads.
 */
function partBytes (source: AsyncIterable<Buffer>): AsyncIterable<Buffer> {
  const iterator = source[Symbol.asyncIterator]()
  return {
    [Symbol.asyncIterator]: () => ({
      next: async () => {
        try {
          return await iterator.next()
        } catch (err) {
          throw multipartError(err)
        }
      }
    })
  }
}

/** Reads what is left of a part so the next one can be parsed. */
async function drain (stream: AsyncIterable<Buffer>): Promise<void> {
  try {
    // eslint-disable-next-line @typescript-eslint/no-unused-vars
    for await (const _chunk of stream) { /* discard */ }
  } catch {
    // The stream already failed (e.g. its size limit); nothing more to read.
  }
}

export async function batchRoutes (app: FastifyInstance): Promise<void> {
  missingPathsRoute(app)
  await app.register(uploadBatchRoute)
}

/** The hash parts of a missing-paths query, refused with the reason when the body is not one. */
function parseMissingQuery (body: Buffer): string[] {
  let parsed: unknown
  try {
    parsed = JSON.parse(body.toString('utf8'))
  } catch {
    throw new NarwhalError('NARWHAL_BAD_REQUEST', 'missing-paths query: the body is not JSON')
  }
  const hashParts = (parsed as { hashParts?: unknown } | null)?.hashParts
  if (!Array.isArray(hashParts) || !hashParts.every((h): h is string => typeof h === 'string' && isValidHashPart(h))) {
    throw new NarwhalError('NARWHAL_BAD_REQUEST', 'missing-paths query: expected {"hashParts": [32-character nix32 hash parts]}')
  }
  if (hashParts.length > MAX_MISSING_QUERY) {
    throw new NarwhalError('NARWHAL_TOO_LARGE', `missing-paths query: at most ${MAX_MISSING_QUERY} hash parts per request`)
  }
  return hashParts
}

/** Upstream narinfo lookups one missing-paths query makes at a time. */
const UPSTREAM_LOOKUPS_AT_ONCE = 16

/** The items for which `keep` resolves true, in their order, at most `limit` checks at a time. */
async function filterConcurrently<T> (items: T[], limit: number, keep: (item: T) => Promise<boolean>): Promise<T[]> {
  const kept: boolean[] = new Array<boolean>(items.length).fill(false)
  let next = 0
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++
      kept[i] = await keep(items[i] as T)
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker))
  return items.filter((_, i) => kept[i] === true)
}

function missingPathsRoute (app: FastifyInstance): void {
  app.post(MISSING_PATHS_ROUTE, async (request, reply) => {
    const hashParts = parseMissingQuery(await readBody(request, 1024 * 1024, 'missing-paths query', '1 MiB'))
    const notHere: string[] = []
    for (const h of hashParts) {
      // A path the pusher finds here is one its upload will reference: use, for gc, like a narinfo GET.
      if (await app.narwhal.metadata.narinfos.has(h)) app.narwhal.access.narinfo(h)
      else notHere.push(h)
    }
    // A path an upstream holds (a verified narinfo) is not uploaded either: its narinfo is served
    // from the upstream's, and a pushed path referencing it counts as complete.
    const { pullThrough } = app.narwhal
    const missing = pullThrough === undefined
      ? notHere
      : await filterConcurrently(notHere, UPSTREAM_LOOKUPS_AT_ONCE, async h => await pullThrough.narinfo(h, request.log) === undefined)
    const answer: MissingPathsResponse = { missing }
    return reply.header('content-type', 'application/json').send(JSON.stringify(answer))
  })
}

/** @fastify/multipart in a scope of its own: every other route keeps buildApp's "read nothing" parser. */
async function uploadBatchRoute (scope: FastifyInstance): Promise<void> {
  const { config } = scope.narwhal
  await scope.register(multipart, {
    throwFileSizeLimit: true,
    // busboy (3.2.6) skips a part that is not form-data; when more than this buffer of such a
    // part arrives in one chunk together with the closing delimiter, its parser stays paused
    // for ever and the request is never answered. 1 MiB is far above what one socket read
    // delivers (64 KiB), and it is the buffer the NAR ingest pipeline uses anyway.
    fileHwm: 1024 * 1024,
    limits: {
      fileSize: config.limits.narBytes,
      files: MAX_BATCH_PARTS,
      parts: MAX_BATCH_PARTS,
      fields: MAX_BATCH_PARTS,
      fieldSize: config.limits.narinfoBytes,
      fieldNameSize: 200
    }
  })

  scope.post(UPLOAD_BATCH_ROUTE, async (request, reply) => {
    if (!request.isMultipart()) {
      throw new NarwhalError('NARWHAL_BAD_REQUEST', 'upload-batch: expected a multipart/form-data body')
    }
    acceptBody(request)
    const results: BatchPartResult[] = []
    const parts = request.parts()[Symbol.asyncIterator]()
    for (;;) {
      let next: IteratorResult<Multipart>
      try {
        next = await parts.next()
      } catch (err) {
        throw multipartError(err)
      }
      if (next.done === true) break
      const result = await storePart(scope, request, next.value)
      results.push(result)
      recordPart(scope, request, result.code === undefined
        ? { name: result.name, status: result.status, outcome: result.result === 'merged' ? 'merged' : result.status === 201 ? 'created' : 'unchanged' }
        : { name: result.name, status: result.status, outcome: 'refused', code: result.code, reason: result.message })
    }
    // The narinfos created by the parts did not wait for the disk one by one: one sync (group
    // commit) makes them all durable before any of them is answered.
    if (results.some(r => r.status === 201 && NARINFO_PART.test(r.name))) await scope.narwhal.metadata.flush()
    const answer: UploadBatchResponse = { results }
    return reply.header('content-type', 'application/json').send(JSON.stringify(answer))
  })
}

/** One part, stored or refused; a refusal is its result, anything else fails the request. */
async function storePart (app: FastifyInstance, request: FastifyRequest, part: Multipart): Promise<BatchPartResult> {
  const idleMs = idleTimeoutMs(app.narwhal.config)
  // busboy leaves the field name undefined when Content-Disposition has no name parameter.
  const name: string = typeof part.fieldname === 'string' ? part.fieldname : ''
  const stream: AsyncIterable<Buffer> = part.type === 'file'
    ? clientPaced(partBytes(part.file), request.raw, idleMs)
    : (async function * () { yield Buffer.from(String(part.value), 'utf8') })()
  try {
    const nar = parseNarUrl(name)
    const narinfo = NARINFO_PART.exec(name)
    if (nar !== undefined) return await narPart(app, request, name, nar.fileHash, stream)
    if (narinfo !== null) return await narinfoPart(app, request, name, narinfo[1] ?? '', stream)
    throw new NarwhalError('NARWHAL_BAD_NAME', `upload-batch part ${JSON.stringify(name.slice(0, 120))}: ` +
      'expected nar/<filehash52>.nar[.ext] or <hash32>.narinfo')
  } catch (err) {
    if (!isNarwhalError(err) || err.code === 'NARWHAL_INTERNAL') throw err
    request.log.info({ part: name, code: err.code, reason: err.message }, 'batch part refused')
    return { name, status: err.statusCode, code: err.code, message: err.message }
  } finally {
    if (part.type === 'file') {
      // A part refused before its end left the idle timeout suspended (clientPaced); the
      // rest of it is the client's to send.
      awaitClient(request.raw, idleMs)
      await drain(part.file)
    }
  }
}

// Verified exactly like PUT /nar/<file> (routes/nar.ts): the same putNar sequence.
async function narPart (app: FastifyInstance, request: FastifyRequest, name: string, fileHash: string,
  stream: AsyncIterable<Buffer>): Promise<BatchPartResult> {
  const outcome = await putNar(stream, fileHash, app.narwhal, app.narwhal.config.limits)
  if (outcome.result === 'unchanged') return { name, status: 200, result: 'unchanged' }
  const { nar } = outcome
  request.log.info({ fileHash, compression: nar.compression, fileSize: nar.fileSize, narSize: nar.narSize }, 'NAR stored (batch)')
  return { name, status: 201, result: 'created' }
}

// Verified exactly like PUT /<hash>.narinfo (routes/narinfo.ts).
async function narinfoPart (app: FastifyInstance, request: FastifyRequest, name: string, hash: string,
  stream: AsyncIterable<Buffer>): Promise<BatchPartResult> {
  const { metadata, trustedKeys, config } = app.narwhal
  const body = await readLimited(stream, config.limits.narinfoBytes)
  const text = body.toString('utf8')
  if (!Buffer.from(text, 'utf8').equals(body)) throw new NarwhalError('NARWHAL_NARINFO_INVALID', 'narinfo is not valid UTF-8')
  const { pullThrough } = app.narwhal
  await pullThrough?.lookupReferences(text, request.log)
  const result = await acceptNarinfo(text, hash, metadata, trustedKeys, { provenance: app.narwhal.provenance, origin: writeOrigin(request), flushedByCaller: true },
    pullThrough !== undefined, app.narwhal.blobs)
  request.log.info({ hash, result }, 'narinfo stored (batch)')
  return { name, status: result === 'created' ? 201 : 200, result }
}
