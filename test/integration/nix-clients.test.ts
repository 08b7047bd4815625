/**
 * What each Nix client sends, recorded by the server: the request order of `nix copy --to` and
 * `nix copy --from`, the headers that matter (User-Agent, Expect, Content-Type), and how many
 * requests are in flight at once. docs/nix-clients.md is written from these observations; where
 * the clients differ, the assertion names the client.
 */
import assert from 'node:assert/strict'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { writeFileSync } from 'node:fs'
import { randomBytes } from 'node:crypto'
import path from 'node:path'
import type { FastifyInstance } from 'fastify'
import { buildClosure, netrcFile, nixKeyPair, tempDir, testEachClient, type NixClient } from '../helpers/nix.js'
import { startServer } from '../helpers/server.js'

interface Seen {
  method: string
  url: string
  status: number
  userAgent: string
  expect: string
  contentType: string
  contentLength: number
  start: number
  end: number
}

/** Records every request on the socket level: narwhal answers hot reads before Fastify's hooks. */
function recorder (): { seen: Seen[], attach: (app: FastifyInstance) => void } {
  const seen: Seen[] = []
  return {
    seen,
    attach: (app) => {
      app.server.prependListener('request', (request: IncomingMessage, response: ServerResponse) => {
        const entry: Seen = {
          method: request.method ?? '',
          url: request.url ?? '',
          status: 0,
          userAgent: request.headers['user-agent'] ?? '',
          expect: String(request.headers.expect ?? ''),
          contentType: request.headers['content-type'] ?? '',
          contentLength: Number(request.headers['content-length'] ?? -1),
          start: performance.now(),
          end: Infinity
        }
        seen.push(entry)
        response.once('close', () => { entry.status = response.statusCode; entry.end = performance.now() })
      })
    }
  }
}

/** The most requests that were open at the same moment. */
function maxInFlight (seen: Seen[]): number {
  let max = 0
  for (const s of seen) max = Math.max(max, seen.filter(o => o.start <= s.start && o.end > s.start).length)
  return max
}

const line = (s: Seen): string => `${s.method} ${s.url} ${s.status}${s.expect === '' ? '' : ` Expect:${s.expect}`}`

testEachClient('nix copy --to: the request order and headers the client sends', async (t, client: NixClient) => {
  const key = await nixKeyPair('test-uploader-1')
  const { seen, attach } = recorder()
  const server = await startServer(t, { trustedKeys: [key.publicKey], beforeListen: attach })
  // One path over 1 MiB, so both sizes of upload show their headers.
  const closure = await buildClosure({ client, dataBytes: 3 * 1024 * 1024 })
  await client.nixOk(['copy', '--to', `${server.url}?secret-key=${key.secretFile}&compression=none`, closure.top],
    { config: [`netrc-file = ${netrcFile((await server.token('push')))}`] })
  t.diagnostic(seen.map(line).join('\n'))

  for (const s of seen) assert.match(s.userAgent, new RegExp(`^curl/[\\d.]+ Nix/${client.version.replace('.', '\\.')}\\.\\d+$`))
  assert.deepEqual([seen[0]?.method, seen[0]?.url], ['GET', '/nix-cache-info'], 'the cache description first')
  assert.ok(!seen.some(s => s.method === 'PUT' && s.url === '/nix-cache-info'), 'narwhal answers nix-cache-info, so no client writes one')

  const hashes = closure.all.map(p => path.basename(p).slice(0, 32))
  const index = (pred: (s: Seen) => boolean): number => seen.findIndex(pred)
  for (const hash of hashes) {
    const asked = index(s => s.method === 'GET' && s.url === `/${hash}.narinfo`)
    const put = index(s => s.method === 'PUT' && s.url === `/${hash}.narinfo`)
    assert.equal(seen[asked]?.status, 404)
    assert.ok(asked >= 0 && put > asked, `${hash}: asks for the narinfo, then puts it`)
    assert.equal(seen[put]?.contentType, 'text/x-nix-narinfo')
    assert.ok(seen[put]!.contentLength > 0, 'narinfo PUT has a Content-Length')
  }
  // Every NAR goes up (after a HEAD that finds nothing) before its narinfo, dependencies first.
  const narPuts = seen.filter(s => s.method === 'PUT' && s.url.startsWith('/nar/'))
  assert.equal(narPuts.length, 3)
  for (const nar of narPuts) {
    assert.equal(nar.contentType, 'application/x-nix-nar')
    assert.ok(index(s => s.method === 'HEAD' && s.url === nar.url) < seen.indexOf(nar), `HEAD ${nar.url} before its PUT`)
  }
  const narinfoPutOrder = seen.filter(s => s.method === 'PUT' && s.url.endsWith('.narinfo')).map(s => s.url.slice(1, 33))
  const [data, dep, top] = hashes
  assert.deepEqual(narinfoPutOrder, [data, dep, top], 'references before the paths that refer to them')
  for (const s of seen) assert.ok(s.status < 400 || (s.status === 404 && s.method !== 'PUT'), `${line(s)}: nothing refused`)
  // Before the first upload, 2.26 also HEADs every path's narinfo; 2.8 HEADs each one just before uploading it.
  const firstPut = index(s => s.method === 'PUT')
  const headsBefore = new Set(seen.slice(0, firstPut).filter(s => s.method === 'HEAD' && s.url.endsWith('.narinfo')).map(s => s.url))
  assert.equal(headsBefore.size, client.version === '2.8' ? 1 : 3, `narinfo HEADs before the first PUT: ${[...headsBefore].join(' ')}`)

  // curl's Expect: 100-continue: Nix 2.8's curl sends it on every PUT, trixie's only above 1 MiB.
  const puts = seen.filter(s => s.method === 'PUT')
  const small = puts.filter(s => s.contentLength <= 1024 * 1024)
  const large = puts.filter(s => s.contentLength > 1024 * 1024)
  assert.ok(small.length > 0 && large.length === 1)
  for (const s of large) assert.equal(s.expect, '100-continue', `${line(s)} (over 1 MiB)`)
  for (const s of small) assert.equal(s.expect, client.version === '2.8' ? '100-continue' : '', `${line(s)} (${s.contentLength} bytes)`)
})

testEachClient('nix copy --from: narinfos, then plain GETs of the NARs', async (t, client: NixClient) => {
  const key = await nixKeyPair('test-uploader-1')
  const { seen, attach } = recorder()
  const server = await startServer(t, { trustedKeys: [key.publicKey], beforeListen: attach })
  const closure = await buildClosure({ client })
  await client.nixOk(['copy', '--to', `${server.url}?secret-key=${key.secretFile}`, closure.top],
    { config: [`netrc-file = ${netrcFile((await server.token('push')))}`] })
  seen.length = 0
  await client.nixOk(['copy', '--from', server.url, '--to', tempDir('narwhal-store-'), closure.top],
    { config: [`trusted-public-keys = ${key.publicKey}`] })
  t.diagnostic(seen.map(line).join('\n'))

  assert.deepEqual([seen[0]?.method, seen[0]?.url], ['GET', '/nix-cache-info'])
  const hashes = closure.all.map(p => path.basename(p).slice(0, 32))
  for (const hash of hashes) assert.ok(seen.some(s => s.method === 'GET' && s.url === `/${hash}.narinfo` && s.status === 200), `${hash}.narinfo fetched`)
  const narGets = seen.filter(s => s.url.startsWith('/nar/'))
  assert.equal(narGets.length, 3, 'each NAR once')
  for (const s of narGets) assert.equal(s.method, 'GET')
  // Each NAR only after its narinfo said where it is.
  const firstNar = seen.indexOf(narGets[0]!)
  assert.ok(seen.findIndex(s => s.url.endsWith('.narinfo')) < firstNar)
  for (const s of seen) assert.ok(['GET', 'HEAD'].includes(s.method), `${line(s)}: a substitution only reads`)
})

testEachClient('requests in flight for eight independent paths: 2.8 one at a time, 2.26 several', async (t, client: NixClient) => {
  const key = await nixKeyPair('test-uploader-1')
  const { seen, attach } = recorder()
  // Each NAR request is held 300 ms, so requests a client has open together overlap visibly.
  const server = await startServer(t, {
    trustedKeys: [key.publicKey],
    beforeListen: app => {
      attach(app)
      app.addHook('onRequest', async (request) => { if (request.url.startsWith('/nar/')) await new Promise(resolve => setTimeout(resolve, 300)) })
    }
  })
  const dir = tempDir('narwhal-independent-')
  const paths: string[] = []
  for (let i = 0; i < 8; i++) {
    const file = path.join(dir, `blob-${i}-${randomBytes(4).toString('hex')}`)
    writeFileSync(file, randomBytes(4 * 1024 * 1024))
    paths.push((await client.ok('nix-store', ['--add', file])).trim())
  }
  await client.nixOk(['copy', '--to', `${server.url}?secret-key=${key.secretFile}&compression=none`, ...paths],
    { config: [`netrc-file = ${netrcFile((await server.token('push')))}`] })
  // NAR requests only: the narinfo queries before them overlap whenever the server takes a
  // moment to answer (a PostgreSQL round trip), whatever the client's NAR transfers do.
  const nars = (): Seen[] => seen.filter(s => s.url.startsWith('/nar/'))
  const up = maxInFlight(nars())
  seen.length = 0
  await client.nixOk(['copy', '--from', server.url, '--to', tempDir('narwhal-store-'), ...paths],
    { config: [`trusted-public-keys = ${key.publicKey}`] })
  const down = maxInFlight(nars())
  t.diagnostic(`${client.name}: most requests in flight: upload ${up}, substitution ${down}`)
  if (client.version === '2.8') {
    // One request at a time, both ways.
    assert.equal(up, 1)
    assert.equal(down, 1)
  } else {
    // Several paths at once both ways (2 on this 2-core machine).
    assert.ok(up >= 2, `upload: ${up} in flight`)
    assert.ok(down >= 2, `substitution: ${down} in flight`)
  }
})
