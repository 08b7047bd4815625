/**
 * Feeds the audit log (cache/audit-log.ts): one entry per write request answered, accepted or
 * refused, and the origin of each write (token, address) for provenance.
 *
 * Attached only to routes that write (every method but GET and HEAD, the pusher's missing-paths
 * query left out: it reads), so reads pay nothing. A route may say more than the status does
 * (noteWrite: the store path written, "merged" rather than "unchanged"); the batch route records
 * one entry per part itself (recordPart) and the request as a whole only when it was refused.
 */
import type { FastifyError, FastifyInstance, FastifyRequest, onErrorHookHandler, onResponseHookHandler } from 'fastify'
import { MISSING_PATHS_ROUTE } from '../api/v1.js'
import type { AuditEntry, AuditOutcome } from '../cache/audit-log.js'
import type { WriteOrigin } from '../cache/provenance.js'
import { FILE_HASH_PATTERN, HASH_PART_PATTERN } from '../nix/store-path.js'
import { answerFor } from './error-handler.js'
import { isWriteMethod, routeMethods } from './route-hooks.js'

interface AuditNote {
  subject?: string
  outcome?: AuditOutcome
  /** Set by the batch route: its parts were recorded one by one. */
  parts?: boolean
  code?: string
  reason?: string
}

declare module 'fastify' {
  interface FastifyRequest {
    narwhalAudit: AuditNote | null
  }
}

const NARINFO_URL = new RegExp(`^/+(${HASH_PART_PATTERN})\\.narinfo$`)
const NAR_URL = new RegExp(`^/+nar/(${FILE_HASH_PATTERN})\\.nar`)

function note (request: FastifyRequest): AuditNote {
  request.narwhalAudit ??= {}
  return request.narwhalAudit
}

/** Who and where a request comes from, for provenance. */
export function writeOrigin (request: FastifyRequest): WriteOrigin {
  const token = request.narwhalToken
  return { tokenId: token?.id ?? null, tokenName: token?.name ?? null, clientAddress: request.ip }
}

/** What the route knows better than the status: the store path written, and the outcome. */
export function noteWrite (request: FastifyRequest, subject: string, outcome: AuditOutcome): void {
  Object.assign(note(request), { subject, outcome })
}

/** Where a request's URL names a narinfo or NAR, its hash. */
function hashesOf (subject: string): { hashPart: string | null, fileHash: string | null } {
  return {
    hashPart: NARINFO_URL.exec('/' + subject)?.[1] ?? null,
    fileHash: NAR_URL.exec('/' + subject)?.[1] ?? null
  }
}

/** One part of an upload batch (routes/batch.ts), accepted or refused. */
export function recordPart (app: FastifyInstance, request: FastifyRequest, part: { name: string, status: number, outcome: AuditOutcome, code?: string, reason?: string }): void {
  note(request).parts = true
  app.narwhal.audit.record({
    ...writeOrigin(request),
    method: 'BATCH',
    subject: part.name,
    ...hashesOf(part.name),
    outcome: part.outcome,
    status: part.status,
    code: part.code ?? null,
    reason: part.reason ?? null
  })
}

function outcomeOfStatus (status: number): AuditOutcome {
  if (status >= 400) return 'refused'
  return status === 201 ? 'created' : status === 200 ? 'unchanged' : 'accepted'
}

export function registerAudit (app: FastifyInstance): void {
  app.decorateRequest('narwhalAudit', null)
  const onError: onErrorHookHandler = (request, _reply, err: FastifyError, done) => {
    const answer = answerFor(err)
    Object.assign(note(request), { code: answer.code, reason: answer.reason })
    done()
  }
  const onResponse: onResponseHookHandler = (request, reply, done) => {
    if (!isWriteMethod(request.method)) { done(); return }
    const n = request.narwhalAudit ?? {}
    const refused = reply.statusCode >= 400
    if (n.parts === true && !refused) { done(); return }
    const path = (request.url.split('?')[0] ?? '').replace(/^\/+/, '')
    const hashes = hashesOf(path)
    const entry: AuditEntry = {
      ...writeOrigin(request),
      method: request.method,
      subject: refused ? path : n.subject ?? path,
      ...hashes,
      outcome: refused ? 'refused' : n.outcome ?? outcomeOfStatus(reply.statusCode),
      status: reply.statusCode,
      code: refused ? n.code ?? null : null,
      reason: refused ? n.reason ?? null : null
    }
    app.narwhal.audit.record(entry)
    done()
  }
  app.addHook('onRoute', (route) => {
    if (route.url === MISSING_PATHS_ROUTE || !routeMethods(route).some(isWriteMethod)) return
    const add = <T>(existing: T | T[] | undefined, hook: T): T[] => existing === undefined ? [hook] : Array.isArray(existing) ? [...existing, hook] : [existing, hook]
    route.onError = add(route.onError, onError)
    route.onResponse = add(route.onResponse, onResponse)
  })
}
