/**
 * The floor for uploads: a bare `node:http` server that does what nginx's WebDAV module does for
 * `nix copy --to`, in Node. A PUT's body is gathered in memory, written to a temp file with one
 * synchronous call and renamed to its URL's path under ROOT, with no check of any kind and no
 * fsync; GET and HEAD serve those files (serve-file.ts) or answer 404. Beside nginx's WebDAV it
 * shows what Node itself costs an upload; beside narwhal, what verifying and syncing each upload
 * costs. Not streamed on purpose: streamed through fs.createWriteStream (an open, a write and a
 * close on the thread pool per file), a push's PUTs took twice as long on this machine (medians
 * of one logged push each, by hand, 2026-12-01: a NAR's PUT 1.07 ms against 0.52 ms, a narinfo's
 * 0.88 against 0.42), which would put the floor above what Node can do.
 *
 *   node dist/bench/floor-dav.js PORT ROOT
 */
import { mkdirSync, renameSync, writeFileSync } from 'node:fs'
import http from 'node:http'
import path from 'node:path'
import { sendFile } from './serve-file.js'

const [port, root] = process.argv.slice(2)
if (port === undefined || root === undefined) throw new Error('usage: floor-dav.js PORT ROOT')

/** What Nix asks for: `nix-cache-info`, `<hash>.narinfo`, `nar/<file>`; nothing with `..` in it. */
const SAFE_PATH = /^\/(?:nar\/)?[A-Za-z0-9][A-Za-z0-9._-]*$/

let uploads = 0

function answer (response: http.ServerResponse, status: number): void {
  response.writeHead(status, { 'content-length': 0 })
  response.end()
}

/**
 * Gathers the body, then writes it with one synchronous call and renames it into place: no
 * thread-pool round trips, as nginx writes a request body in its own process.
 */
async function store (request: http.IncomingMessage, file: string): Promise<void> {
  const chunks: Buffer[] = []
  for await (const chunk of request) chunks.push(chunk as Buffer)
  mkdirSync(path.dirname(file), { recursive: true })
  const temp = path.join(root ?? '', `.upload-${process.pid}-${uploads++}`)
  writeFileSync(temp, Buffer.concat(chunks))
  renameSync(temp, file)
}

http.createServer((request, response) => {
  const url = request.url ?? ''
  if (!SAFE_PATH.test(url)) { answer(response, 400); return }
  const file = path.join(root, url)
  if (request.method === 'PUT') {
    store(request, file).then(() => { answer(response, 201) }, () => { response.destroy() })
    return
  }
  if (request.method !== 'GET' && request.method !== 'HEAD') { answer(response, 405); return }
  if (!sendFile(request, response, file, 'application/octet-stream')) answer(response, 404)
}).listen(Number(port), '127.0.0.1')
