/**
 * The floor: a bare `node:http` server (no framework, no database, no logging, no metrics) with as
 * many processes as the narwhal under test. It answers one narinfo from memory and 404 for any
 * other narinfo, and, given STATIC_ROOT, `nar/<file>` from STATIC_ROOT/nar with narwhal's own
 * read loop (serve-file.ts). Whatever narwhal cannot reach that this reaches is narwhal's own
 * cost; whatever this cannot reach against nginx is Node's (for NARs: no sendfile, so every byte
 * is copied in and out).
 *
 *   node dist/bench/floor-server.js PORT WORKERS NARINFO_FILE HASH_PART [STATIC_ROOT]
 */
import cluster from 'node:cluster'
import http from 'node:http'
import { readFileSync } from 'node:fs'
import path from 'node:path'
import { sendFile } from './serve-file.js'

const [port, workers, narinfoFile, hashPart, staticRoot] = process.argv.slice(2)
if (port === undefined || workers === undefined || narinfoFile === undefined || hashPart === undefined) {
  throw new Error('usage: floor-server.js PORT WORKERS NARINFO_FILE HASH_PART [STATIC_ROOT]')
}

if (cluster.isPrimary && Number(workers) > 1) {
  for (let i = 0; i < Number(workers); i++) cluster.fork()
  // The primary has no server of its own: once its workers are gone it exits by itself.
  process.on('SIGTERM', () => { for (const w of Object.values(cluster.workers ?? {})) w?.kill() })
} else {
  const hit = readFileSync(narinfoFile)
  const hitPath = `/${hashPart}.narinfo`
  const miss = Buffer.from('not found\n')
  const narUrl = /^\/nar\/([a-z0-9]+\.nar(?:\.[a-z]+)?)$/
  http.createServer((request, response) => {
    const narFile = staticRoot === undefined ? undefined : narUrl.exec(request.url ?? '')?.[1]
    if (staticRoot !== undefined && narFile !== undefined && sendFile(request, response, path.join(staticRoot, 'nar', narFile), 'application/x-nix-nar')) return
    const found = request.url === hitPath
    const body = found ? hit : miss
    response.writeHead(found ? 200 : 404, { 'content-type': found ? 'text/x-nix-narinfo' : 'text/plain', 'content-length': body.length })
    response.end(body)
  }).listen(Number(port), '127.0.0.1')
}
