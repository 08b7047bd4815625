/**
 * The floor for request rates: a bare `node:http` server (no framework, no database, no logging)
 * answering one narinfo from memory and 404 for anything else, with as many processes as the
 * narwhal under test. Whatever narwhal cannot reach that this reaches is narwhal's own cost;
 * whatever this cannot reach against nginx is Node's.
 *
 *   node dist/bench/floor-server.js PORT WORKERS NARINFO_FILE HASH_PART
 */
import cluster from 'node:cluster'
import http from 'node:http'
import { readFileSync } from 'node:fs'

const [port, workers, narinfoFile, hashPart] = process.argv.slice(2)
if (port === undefined || workers === undefined || narinfoFile === undefined || hashPart === undefined) {
  throw new Error('usage: floor-server.js PORT WORKERS NARINFO_FILE HASH_PART')
}

if (cluster.isPrimary && Number(workers) > 1) {
  for (let i = 0; i < Number(workers); i++) cluster.fork()
  // The primary has no server of its own: once its workers are gone it exits by itself.
  process.on('SIGTERM', () => { for (const w of Object.values(cluster.workers ?? {})) w?.kill() })
} else {
  const hit = readFileSync(narinfoFile)
  const hitPath = `/${hashPart}.narinfo`
  const miss = Buffer.from('not found\n')
  http.createServer((request, response) => {
    const found = request.url === hitPath
    const body = found ? hit : miss
    response.writeHead(found ? 200 : 404, { 'content-type': found ? 'text/x-nix-narinfo' : 'text/plain', 'content-length': body.length })
    response.end(body)
  }).listen(Number(port), '127.0.0.1')
}
