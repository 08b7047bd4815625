/**
 * How the bench's bare Node floors (floor-server.ts, floor-dav.ts) answer a GET or HEAD of a file:
 * with narwhal's own read loop (storage/file-body.ts), so that what they measure against narwhal is
 * the framework, the database and the checks, not a different way of reading files.
 */
import { fstatSync, openSync } from 'node:fs'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { SMALL_BODY_BYTES } from '../src/server/routes/nar.js'
import { FileBody } from '../src/storage/file-body.js'

/** Answers with the whole of `file`, or returns false having sent nothing when it cannot be opened. */
export function sendFile (request: IncomingMessage, response: ServerResponse, file: string, contentType: string): boolean {
  let fd: number
  try {
    fd = openSync(file, 'r')
  } catch {
    return false
  }
  const { size } = fstatSync(fd)
  const body = new FileBody(fd, size, 0, size)
  response.writeHead(200, { 'content-type': contentType, 'content-length': size })
  if (request.method === 'HEAD' || size === 0) {
    body.close()
    response.end()
  } else if (size <= SMALL_BODY_BYTES) {
    response.end(body.readNow())
  } else {
    // Never rejects; a download cut short only ends early.
    body.send(response).catch(() => {})
  }
  return true
}
