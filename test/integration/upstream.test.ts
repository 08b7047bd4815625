/**
 * Pull-through from an upstream cache, with the real Nix client as the judge. The upstream is
 * nginx serving what `nix copy --to 'file://DIR?secret-key=…&compression=xz'` wrote: what
 * cache.nixos.org looks like to a client. Its access log counts what narwhal asked of it.
 */
import { test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { createServer, type Socket } from 'node:net'
import { once } from 'node:events'
import { existsSync, readFileSync, writeFileSync, mkdirSync, rmSync } from 'node:fs'
import path from 'node:path'
import { backendFor, sqliteOnly } from '../helpers/backend.js'
import { buildClosure, HOST_NIX, netrcFile, nixKeyPair, nix, nixOk, run, tempDir, testEachClient, type NixClient, type TestClosure } from '../helpers/nix.js'
import { startNginxCache, type NginxCache } from '../helpers/nginx.js'
import { startServer } from '../helpers/server.js'
import { CLI, spawnServer, type ServerProcess } from '../helpers/server-process.js'
import { MAX_REDIRECTS } from '../../src/upstream/upstream.js'
import { layoutFor, narFilePath } from '../../src/storage/layout.js'
import { createDatabase, postgresEngine } from '../helpers/postgres.js'
import { createBucket, removeBucket, s3Engine, storageUrl } from '../helpers/s3.js'

interface Upstream { nginx: NginxCache, key: { secretFile: string, publicKey: string }, closure: TestClosure, dir: string }

/** A fresh closure copied to a file:// cache signed by a fresh key, served by nginx. */
async function upstreamWith (t: Parameters<typeof startNginxCache>[0], options: { dataBytes?: number, only?: 'dep', limitRate?: string } = {}): Promise<Upstream> {
  const key = await nixKeyPair('upstream-test-1')
  const closure = await buildClosure({ dataBytes: options.dataBytes })
  const dir = tempDir('narwhal-upstream-')
  const root = path.join(dir, 'cache')
  await nixOk(['copy', '--to', `file://${root}?secret-key=${key.secretFile}&compression=xz`, options.only === 'dep' ? closure.dep : closure.top])
  const nginx = await startNginxCache(t, root, dir, { limitRate: options.limitRate })
  return { nginx, key, closure, dir }
}

function upstreamEnv (upstream: Upstream, keys = [upstream.key.publicKey]): Record<string, string> {
  return { NARWHAL_UPSTREAMS: upstream.nginx.url, NARWHAL_UPSTREAM_KEYS: keys.join(' ') }
}

function hashPart (storePath: string): string {
  return path.basename(storePath).slice(0, 32)
}

/** nginx writes a request's log line after answering it: read the log once it stopped growing. */
async function upstreamRequests (upstream: Upstream): Promise<string[]> {
  let lines = upstream.nginx.requests()
  for (;;) {
    await new Promise(resolve => setTimeout(resolve, 150))
    const again = upstream.nginx.requests()
    if (again.length === lines.length) return again
    lines = again
  }
}

async function narGets (upstream: Upstream): Promise<string[]> {
  return (await upstreamRequests(upstream)).filter(l => l.startsWith('GET /nar/'))
}

/** `nix-store --realise` into an empty store with `cache` as the only substituter. */
async function substitute (cache: string, storePath: string, trustedKeys: string[], client: NixClient = HOST_NIX): Promise<string> {
  const store = tempDir('narwhal-client-store-')
  await client.ok('nix-store', ['--store', store, '--realise', storePath,
    '--option', 'substituters', cache, '--option', 'trusted-public-keys', trustedKeys.join(' ')])
  return store
}

function assertSameFiles (store: string, closure: TestClosure): void {
  for (const file of ['random.bin', 'sh', 'sub/text.txt']) {
    assert.ok(readFileSync(path.join(store, closure.data, file)).equals(readFileSync(path.join(closure.data, file))), `${file} is identical`)
  }
  assert.equal(readFileSync(path.join(store, closure.top, 'dep-ref'), 'utf8').trim(), closure.dep)
  assert.equal(readFileSync(path.join(store, closure.dep, 'data-ref'), 'utf8').trim(), closure.data)
}

/** Waits up to 5 s for `check` to hold: a pulled NAR is stored just after its last byte was sent. */
async function eventually (check: () => Promise<boolean> | boolean, what: string): Promise<void> {
  const deadline = Date.now() + 5000
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail(`not within 5 s: ${what}`)
    await new Promise(resolve => setTimeout(resolve, 50))
  }
}

async function metric (server: { url: string }, name: string, labels: string): Promise<number> {
  const text = await (await fetch(`${server.url}/metrics`)).text()
  const line = text.split('\n').find(l => l.startsWith(`${name}{`) && l.includes(labels))
  return line === undefined ? 0 : Number(line.split(' ').pop())
}

testEachClient('a closure substitutes through narwhal from an nginx upstream: same files, upstream signatures kept', async (t, client) => {
  const upstream = await upstreamWith(t)
  const server = await startServer(t, { env: upstreamEnv(upstream) })

  const store = await substitute(server.url, upstream.closure.top, [upstream.key.publicKey], client)
  assertSameFiles(store, upstream.closure)
  await client.nixOk(['store', 'verify', '--recursive', '--store', store, upstream.closure.top], { config: [`trusted-public-keys = ${upstream.key.publicKey}`] })

  // The narinfos narwhal serves are the upstream's, byte for byte: same Sig lines, and the URL
  // nix copy wrote is already nar/<FileHash>.nar.xz, which narwhal serves.
  for (const storePath of upstream.closure.all) {
    const own = await (await fetch(`${server.url}/${hashPart(storePath)}.narinfo`)).text()
    const original = readFileSync(path.join(upstream.nginx.root, `${hashPart(storePath)}.narinfo`), 'utf8')
    assert.match(own, /\nSig: upstream-test-1:/)
    assert.equal(own, original)
  }
  // Every NAR came from narwhal's store, fetched once each.
  assert.equal((await narGets(upstream)).length, upstream.closure.all.length)
  await eventually(async () => await metric(server, 'narwhal_upstream_nar_fetches_total', upstream.nginx.url) === upstream.closure.all.length,
    'every NAR fetched is stored')
  assert.equal((await server.storedFiles()).length, upstream.closure.all.length)
  // Each pulled path's provenance names the upstream it came from and the key that made it acceptable.
  for (const storePath of upstream.closure.all) {
    const rows = (await server.cache.provenance.ofPath(hashPart(storePath)))
    assert.deepEqual(rows.map(r => [r.outcome, r.upstream, r.keyNames]), [['created', upstream.nginx.url, ['upstream-test-1']]])
  }
  assert.equal(await metric(server, 'narwhal_upstream_narinfo_hits_total', upstream.nginx.url), upstream.closure.all.length)
  assert.ok(await metric(server, 'narwhal_upstream_received_bytes_total', upstream.nginx.url) > 256 * 1024)

  // A second client is served from narwhal alone.
  const before = (await upstreamRequests(upstream)).length
  assertSameFiles(await substitute(server.url, upstream.closure.top, [upstream.key.publicKey], client), upstream.closure)
  assert.equal((await upstreamRequests(upstream)).length, before, 'the upstream was not asked again')

  // A miss is remembered (negativeCacheSeconds, 60 by default): asked twice, the upstream once.
  const missing = '1'.repeat(32)
  for (let i = 0; i < 2; i++) assert.equal((await fetch(`${server.url}/${missing}.narinfo`)).status, 404)
  // nginx writes its access log line after it answers, so narwhal's 404 can come first.
  await eventually(async () => upstream.nginx.requests().some(l => l.includes(missing)), 'the miss is in the upstream\'s log')
  assert.deepEqual((await upstreamRequests(upstream)).filter(l => l.includes(missing)), [`GET /${missing}.narinfo 404`])
  assert.equal(await metric(server, 'narwhal_upstream_narinfo_misses_total', upstream.nginx.url), 1)
})

test('16 clients downloading a NAR not yet fetched cause one upstream GET, and all get the whole NAR', async (t) => {
  const upstream = await upstreamWith(t, { dataBytes: 8 * 1024 * 1024 })
  const server = await startServer(t, { env: upstreamEnv(upstream) })
  const narinfo = await (await fetch(`${server.url}/${hashPart(upstream.closure.data)}.narinfo`)).text()
  const url = /^URL: (.*)$/m.exec(narinfo)?.[1] ?? ''
  assert.equal((await narGets(upstream)).length, 0, 'a narinfo request fetches no NAR')
  const expected = readFileSync(path.join(upstream.nginx.root, url))
  assert.ok(expected.length > 4 * 1024 * 1024)
  const head = await fetch(`${server.url}/${url}`, { method: 'HEAD' })
  assert.equal(head.status, 200)
  assert.equal(head.headers.get('content-length'), String(expected.length))
  assert.equal((await narGets(upstream)).length, 0, 'a HEAD fetches no NAR')

  const bodies = await Promise.all(Array.from({ length: 16 }, async () => {
    const response = await fetch(`${server.url}/${url}`)
    assert.equal(response.status, 200)
    assert.equal(response.headers.get('content-length'), String(expected.length))
    return Buffer.from(await response.arrayBuffer())
  }))
  for (const body of bodies) assert.ok(body.equals(expected), 'each client received the upstream NAR exactly')
  assert.deepEqual(await narGets(upstream), [`GET /${url} 200`])
})

test('a narinfo signed by a key not configured for the upstream is not served', async (t) => {
  const upstream = await upstreamWith(t)
  const other = await nixKeyPair('someone-else-1')
  const server = await startServer(t, { env: upstreamEnv(upstream, [other.publicKey]) })
  const response = await fetch(`${server.url}/${hashPart(upstream.closure.top)}.narinfo`)
  assert.equal(response.status, 404)
  assert.equal(await metric(server, 'narwhal_upstream_refusals_total', 'reason="narinfo_signature"'), 1)
  const result = await nix(['copy', '--from', server.url, '--to', tempDir('narwhal-store-'), upstream.closure.top],
    { config: [`trusted-public-keys = ${upstream.key.publicKey}`] })
  assert.notEqual(result.code, 0)
  assert.deepEqual(await narGets(upstream), [])
})

test('a NAR altered upstream is never received whole, leaves nothing stored, and its narinfo is no longer served', async (t) => {
  const upstream = await upstreamWith(t, { dataBytes: 2 * 1024 * 1024 })
  const server = await startServer(t, { env: upstreamEnv(upstream) })
  const narinfoUrl = `${server.url}/${hashPart(upstream.closure.data)}.narinfo`
  const url = /^URL: (.*)$/m.exec(await (await fetch(narinfoUrl)).text())?.[1] ?? ''
  // Same size, one byte changed in the middle: only the hashes can tell.
  const file = path.join(upstream.nginx.root, url)
  const bytes = readFileSync(file)
  const middle = bytes.length >> 1
  bytes[middle] = (bytes[middle] ?? 0) ^ 0xff
  writeFileSync(file, bytes)

  const outcomes = await Promise.all(Array.from({ length: 3 }, async () => {
    try {
      const response = await fetch(`${server.url}/${url}`)
      if (response.status !== 200) return { status: response.status, bytes: 0 }
      return { status: 200, bytes: (await response.arrayBuffer()).byteLength }
    } catch (err) {
      // The body was cut off short of its Content-Length.
      return { status: 200, bytes: -1, err }
    }
  }))
  for (const outcome of outcomes) assert.ok(outcome.bytes < bytes.length, `no client got the whole NAR: ${JSON.stringify(outcome)}`)
  assert.ok(outcomes.some(o => o.status === 200 && o.bytes === -1), 'streaming clients were cut off')
  assert.deepEqual(await server.storedFiles(), [], 'nothing stored, no temp file left')
  assert.equal((await fetch(narinfoUrl)).status, 404, 'the narinfo is no longer served')
  assert.equal((await fetch(`${server.url}/${url}`)).status, 404)
  assert.equal(await metric(server, 'narwhal_upstream_refusals_total', 'reason="nar_mismatch"'), 1)
  assert.equal((await narGets(upstream)).length, 1)
})

test('an upstream that redirects: narinfos and NARs are fetched where it sends them, verified the same; redirects without end fail after MAX_REDIRECTS', async (t) => {
  const upstream = await upstreamWith(t)
  const server = await startServer(t, { env: { NARWHAL_UPSTREAMS: upstream.nginx.redirectingUrl, NARWHAL_UPSTREAM_KEYS: upstream.key.publicKey } })
  assertSameFiles(await substitute(server.url, upstream.closure.top, [upstream.key.publicKey]), upstream.closure)
  const requests = await upstreamRequests(upstream)
  const count = upstream.closure.all.length
  // Each narinfo and NAR asked of the redirecting server once, and fetched where it pointed.
  assert.equal(requests.filter(l => /^GET \/[0-9a-z]{32}\.narinfo 302$/.test(l)).length, count)
  assert.equal(requests.filter(l => /^GET \/[0-9a-z]{32}\.narinfo 200$/.test(l)).length, count)
  assert.equal(requests.filter(l => /^GET \/nar\/\S+ 302$/.test(l)).length, count)
  assert.equal(requests.filter(l => /^GET \/nar\/\S+ 200$/.test(l)).length, count)
  // Counted once stored, which may be after the client had its bytes (a bucket's commit).
  await eventually(async () => await metric(server, 'narwhal_upstream_nar_fetches_total', upstream.nginx.redirectingUrl) === count,
    'every NAR fetched through the redirects is stored')

  // Redirects without end: followed MAX_REDIRECTS times, then a failure, and the client a 404.
  const looping = `${upstream.nginx.redirectingUrl}/loop`
  const other = await startServer(t, { env: { NARWHAL_UPSTREAMS: looping, NARWHAL_UPSTREAM_KEYS: upstream.key.publicKey } })
  const hash = hashPart(upstream.closure.top)
  assert.equal((await fetch(`${other.url}/${hash}.narinfo`)).status, 404)
  assert.equal(await metric(other, 'narwhal_upstream_errors_total', looping), 1)
  const loops = (await upstreamRequests(upstream)).filter(l => new RegExp(`^GET /loop/${hash}\\.narinfox* 302$`).test(l))
  assert.equal(loops.length, MAX_REDIRECTS + 1)
})

/** `narwhal serve` pulling from a fresh upstream; `restart` starts it again on the same data folder. */
async function pullingServer (t: TestContext): Promise<{ upstream: Upstream, dataDir: string, server: ServerProcess, restart: () => Promise<ServerProcess> }> {
  const upstream = await upstreamWith(t)
  const dataDir = tempDir('narwhal-data-')
  const logFile = path.join(tempDir('narwhal-log-'), 'server.log')
  const args = ['--upstream', upstream.nginx.url, '--upstream-key', upstream.key.publicKey]
  const start = async (): Promise<ServerProcess> => await spawnServer({ dataDir, logFile, trustedKeys: [], args })
  const pulling = { upstream, dataDir, server: await start(), restart: async () => { pulling.server = await start(); return pulling.server } }
  t.after(async () => { await pulling.server.stop() })
  return pulling
}

test('upstream stopped: pulled paths still substitute, a miss answers 404 quickly, and both survive a restart', async (t) => {
  const pulling = await pullingServer(t)
  const { upstream } = pulling
  let server = pulling.server
  assertSameFiles(await substitute(server.url, upstream.closure.top, [upstream.key.publicKey]), upstream.closure)
  assert.match(server.log(), new RegExp(`"upstream":"${upstream.nginx.url}".*"storePath":"${upstream.closure.top}".*narinfo pulled from upstream`))

  await upstream.nginx.stop()
  assertSameFiles(await substitute(server.url, upstream.closure.top, [upstream.key.publicKey]), upstream.closure)
  const started = Date.now()
  const miss = await fetch(`${server.url}/${'0'.repeat(32)}.narinfo`)
  assert.equal(miss.status, 404)
  assert.ok(Date.now() - started < 3000, `a miss took ${Date.now() - started} ms`)

  await server.stop()
  server = await pulling.restart()
  assertSameFiles(await substitute(server.url, upstream.closure.top, [upstream.key.publicKey]), upstream.closure)
})

test('a pulled NAR survives kill -9: after the restart each NAR is fetched once more at most', async (t) => {
  const pulling = await pullingServer(t)
  const { upstream } = pulling
  let server = pulling.server
  const count = upstream.closure.all.length
  assertSameFiles(await substitute(server.url, upstream.closure.top, [upstream.key.publicKey]), upstream.closure)
  // Killed as soon as the client has every byte: the last NAR's store may not have finished.
  await server.kill()
  server = await pulling.restart()
  assertSameFiles(await substitute(server.url, upstream.closure.top, [upstream.key.publicKey]), upstream.closure)
  const afterKill = (await narGets(upstream)).length
  assert.ok(afterKill >= count && afterKill <= count + 1, `each NAR fetched once, the one being stored at the kill at most twice: ${afterKill}`)
})

test('a pulled NAR whose file was lost (as a power cut can lose its rename) is fetched again, not answered 404', sqliteOnly('removes a NAR file from the data folder by hand'), async (t) => {
  const pulling = await pullingServer(t)
  const { upstream, dataDir } = pulling
  let server = pulling.server
  assertSameFiles(await substitute(server.url, upstream.closure.top, [upstream.key.publicKey]), upstream.closure)
  const fetched = (await narGets(upstream)).length

  // Stored for good (a clean stop waits for fetches under way); then its file goes missing
  // while its row stays: what a power cut between the NAR's rename and its directory's write-back
  // would leave. A power cut itself cannot be played here.
  await server.stop()
  const narinfo = readFileSync(path.join(upstream.nginx.root, `${hashPart(upstream.closure.data)}.narinfo`), 'utf8')
  const url = /^URL: (.*)$/m.exec(narinfo)?.[1] ?? ''
  const fileHash = url.slice('nar/'.length, 'nar/'.length + 52)
  const file = narFilePath(layoutFor(dataDir), fileHash)
  assert.ok(existsSync(file), 'the pulled NAR is stored')
  rmSync(file)
  server = await pulling.restart()
  assertSameFiles(await substitute(server.url, upstream.closure.top, [upstream.key.publicKey]), upstream.closure)
  const gets = await narGets(upstream)
  assert.equal(gets.length, fetched + 1, 'only the lost NAR was fetched again')
  assert.equal(gets.at(-1), `GET /${url} 200`)
  await eventually(() => existsSync(file), 'the lost NAR is stored again')
  assert.equal((await fetch(`${server.url}/${url}`)).status, 200)
})

test('an upstream that does not answer: misses are 404 within the answer timeout, then at once while it is skipped', async (t) => {
  const sockets = new Set<Socket>()
  const silent = createServer(socket => { sockets.add(socket) })
  silent.listen(0, '127.0.0.1')
  await once(silent, 'listening')
  t.after(() => { for (const s of sockets) s.destroy(); silent.close() })
  const address = silent.address()
  if (address === null || typeof address === 'string') throw new Error('no address')
  const key = await nixKeyPair('upstream-test-1')
  const dir = tempDir('narwhal-config-')
  mkdirSync(dir, { recursive: true })
  const configFile = path.join(dir, 'config.json')
  writeFileSync(configFile, JSON.stringify({
    upstreams: [{ url: `http://127.0.0.1:${address.port}`, publicKeys: [key.publicKey], timeouts: { answerSeconds: 1 }, failureBackoffSeconds: 60 }]
  }))
  const server = await startServer(t, { env: { NARWHAL_CONFIG: configFile } })
  const timings: number[] = []
  for (let i = 0; i < 5; i++) {
    const started = Date.now()
    const response = await fetch(`${server.url}/${String(i).repeat(32)}.narinfo`)
    assert.equal(response.status, 404)
    timings.push(Date.now() - started)
  }
  assert.ok(timings.every(ms => ms < 2500), `every miss answered within the timeout: ${timings.join(', ')} ms`)
  assert.ok((timings[3] ?? Infinity) < 200 && (timings[4] ?? Infinity) < 200, `once skipped, misses are immediate: ${timings.join(', ')} ms`)
  assert.equal(await metric(server, 'narwhal_upstream_errors_total', `upstream="http://127.0.0.1:${address.port}"`), 3)
  assert.equal(server.app.narwhal.upstreams?.()[0]?.state, 'skipped', 'the front page shows the upstream skipped')
})

test('push and proxy in one: the pusher\'s missing-paths question and nix copy --to narwhal skip upstream-held paths without fetching their NARs, and the pushed closure substitutes', async (t) => {
  // The upstream holds data and dep; top, which references dep, is only on this machine.
  const upstream = await upstreamWith(t, { only: 'dep' })
  const uploader = await nixKeyPair('test-uploader-1')
  const server = await startServer(t, { trustedKeys: [uploader.publicKey], env: upstreamEnv(upstream) })
  const { closure } = upstream
  assert.ok(!existsSync(path.join(upstream.nginx.root, `${hashPart(closure.top)}.narinfo`)))

  // The pusher's question: only top is missing, the upstream holds the rest.
  const question = await fetch(`${server.url}/api/v1/missing-paths`, {
    method: 'POST',
    headers: { authorization: `Bearer ${await server.token('push')}`, 'content-type': 'application/json' },
    body: JSON.stringify({ hashParts: closure.all.map(hashPart) })
  })
  assert.deepEqual(await question.json(), { missing: [hashPart(closure.top)] })

  await nixOk(['copy', '--to', `${server.url}?secret-key=${uploader.secretFile}`, closure.top],
    { config: [`netrc-file = ${netrcFile((await server.token('push')))}`] })
  assert.deepEqual(await narGets(upstream), [], 'narwhal fetched no NAR for nix copy --to')
  assert.equal((await server.storedFiles()).length, 1, 'only the pushed path\'s NAR was uploaded')
  const top = await (await fetch(`${server.url}/${hashPart(closure.top)}.narinfo`)).text()
  assert.match(top, /\nSig: test-uploader-1:/)

  const store = await substitute(server.url, closure.top, [uploader.publicKey, upstream.key.publicKey])
  assertSameFiles(store, closure)
  assert.equal((await narGets(upstream)).length, 2, 'the upstream paths\' NARs were fetched when a client asked for them')
  // fsck counts a reference an upstream holds as present.
  const fsck = await run('node', [CLI, 'fsck', '--data', server.config.dataDir, ...(await backendFor(server.config.dataDir)).args])
  assert.equal(fsck.code, 0, fsck.stdout + fsck.stderr)
})

test('with --workers 2 the workers take turns: each NAR of the closure is fetched once, and the closure substitutes', async (t) => {
  const upstream = await upstreamWith(t)
  const server = await spawnServer({
    dataDir: tempDir('narwhal-data-'),
    logFile: path.join(tempDir('narwhal-log-'), 'server.log'),
    trustedKeys: [],
    args: ['--workers', '2', '--upstream', upstream.nginx.url, '--upstream-key', upstream.key.publicKey]
  })
  t.after(async () => { await server.stop() })
  assertSameFiles(await substitute(server.url, upstream.closure.top, [upstream.key.publicKey]), upstream.closure)
  assertSameFiles(await substitute(server.url, upstream.closure.top, [upstream.key.publicKey]), upstream.closure)
  assert.equal((await narGets(upstream)).length, upstream.closure.all.length)
  assert.equal(await metric(server, 'narwhal_upstream_nar_fetches_total', upstream.nginx.url), upstream.closure.all.length)
})

test('with --workers 2, 16 clients downloading a NAR not yet fetched cause one upstream GET, and all get the whole NAR', async (t) => {
  const upstream = await upstreamWith(t, { dataBytes: 8 * 1024 * 1024 })
  const logFile = path.join(tempDir('narwhal-log-'), 'server.log')
  const server = await spawnServer({
    dataDir: tempDir('narwhal-data-'),
    logFile,
    trustedKeys: [],
    args: ['--workers', '2', '--upstream', upstream.nginx.url, '--upstream-key', upstream.key.publicKey],
    // Every request logged, with the pid of the worker that answered it.
    env: { NARWHAL_LOG_LEVEL: 'debug' }
  })
  t.after(async () => { await server.stop() })
  await eventually(() => server.log().split('"msg":"worker listening"').length === 3, 'both workers listen')
  const narinfo = await (await fetch(`${server.url}/${hashPart(upstream.closure.data)}.narinfo`)).text()
  const url = /^URL: (.*)$/m.exec(narinfo)?.[1] ?? ''
  const expected = readFileSync(path.join(upstream.nginx.root, url))
  assert.ok(expected.length > 4 * 1024 * 1024)

  // Each client on its own connection: the primary hands connections to the workers in turn.
  const bodies = await Promise.all(Array.from({ length: 16 }, async () => {
    const response = await fetch(`${server.url}/${url}`, { headers: { connection: 'close' } })
    assert.equal(response.status, 200)
    return Buffer.from(await response.arrayBuffer())
  }))
  for (const body of bodies) assert.ok(body.equals(expected), 'each client received the upstream NAR exactly')
  assert.deepEqual(await narGets(upstream), [`GET /${url} 200`])
  // Both workers answered some of the 16.
  const answeredBy = new Set(server.log().split('\n').filter(l => l.includes('"msg":"request"') && l.includes(`"url":"/${url}"`))
    .map(l => (JSON.parse(l) as { pid: number }).pid))
  assert.ok(answeredBy.size >= 2, `both workers served the NAR (pids ${[...answeredBy].join(', ')})`)
})

/** Two `narwhal serve` replicas on one fresh PostgreSQL database and one fresh bucket, pulling through from `upstream`. */
async function replicasOf (t: TestContext, upstream: Upstream): Promise<[ServerProcess, ServerProcess]> {
  const db = await createDatabase(postgresEngine())
  const engine = s3Engine()
  const bucket = await createBucket(engine, 'nw-replicas')
  const env = {
    NARWHAL_DATABASE_URL: db.url,
    NARWHAL_STORAGE_URL: storageUrl(engine, bucket),
    AWS_ACCESS_KEY_ID: engine.accessKey,
    AWS_SECRET_ACCESS_KEY: engine.secretKey,
    NARWHAL_LOG_LEVEL: 'debug'
  }
  const servers: ServerProcess[] = []
  // Registered first, run first: the servers end their sessions before the database is dropped.
  t.after(async () => {
    await Promise.all(servers.map(async s => { await s.stop() }))
    await db.drop()
    await removeBucket(engine, bucket)
  })
  // One after the other: the first applies the migrations.
  for (const name of ['a', 'b']) {
    servers.push(await spawnServer({
      dataDir: tempDir(`narwhal-replica-${name}-`),
      logFile: path.join(tempDir('narwhal-log-'), `${name}.log`),
      trustedKeys: [],
      args: ['--upstream', upstream.nginx.url, '--upstream-key', upstream.key.publicKey],
      env
    }))
  }
  return servers as [ServerProcess, ServerProcess]
}

/** The data path's NAR URL (from the narinfo `server` serves) and the upstream's bytes of it. */
async function dataNar (server: { url: string }, upstream: Upstream): Promise<{ url: string, expected: Buffer }> {
  const narinfo = await (await fetch(`${server.url}/${hashPart(upstream.closure.data)}.narinfo`)).text()
  const url = /^URL: (.*)$/m.exec(narinfo)?.[1] ?? ''
  return { url, expected: readFileSync(path.join(upstream.nginx.root, url)) }
}

test('two replicas on one PostgreSQL and one bucket: 16 clients split over both cause one upstream GET of a NAR, all get it whole, and it substitutes through the other', async (t) => {
  // About 4 s to fetch at 2 MB/s: every client asks while the first fetch is under way.
  const upstream = await upstreamWith(t, { dataBytes: 8 * 1024 * 1024, limitRate: '2m' })
  const [a, b] = await replicasOf(t, upstream)
  const { url, expected } = await dataNar(a, upstream)
  assert.ok(expected.length > 4 * 1024 * 1024)

  const bodies = await Promise.all(Array.from({ length: 16 }, async (_, i) => {
    const response = await fetch(`${(i % 2 === 0 ? a : b).url}/${url}`, { headers: { connection: 'close' } })
    assert.equal(response.status, 200)
    return Buffer.from(await response.arrayBuffer())
  }))
  for (const body of bodies) assert.ok(body.equals(expected), 'each client received the upstream NAR exactly')
  assert.deepEqual(await narGets(upstream), [`GET /${url} 200`], 'one upstream GET for both replicas')
  for (const server of [a, b]) {
    assert.ok(server.log().split('\n').some(l => l.includes('"msg":"request"') && l.includes(`"url":"/${url}"`)), 'both replicas served the NAR')
  }

  // The whole closure through the other replica: the data NAR from the bucket, the rest fetched once each.
  const trust = [`trusted-public-keys = ${upstream.key.publicKey}`]
  const store = tempDir('narwhal-client-store-')
  await nixOk(['copy', '--from', b.url, '--to', store, upstream.closure.top], { config: trust })
  await nixOk(['store', 'verify', '--recursive', '--store', store, upstream.closure.top], { config: trust })
  assertSameFiles(store, upstream.closure)
  const gets = await narGets(upstream)
  assert.equal(gets.length, upstream.closure.all.length, gets.join('\n'))
  assert.equal(gets.filter(l => l === `GET /${url} 200`).length, 1)
})

/** Reads `response`'s body to its end: the bytes, or 'cut' when the connection ended first. */
async function bodyOrCut (response: Response): Promise<Buffer | 'cut'> {
  try {
    return Buffer.from(await response.arrayBuffer())
  } catch {
    return 'cut'
  }
}

test('with --workers 2, the worker fetching a NAR killed mid-fetch: its clients get a cut response, the other worker\'s waiters fetch it themselves, it substitutes, fsck is clean', async (t) => {
  // About 4 s to fetch at 2 MB/s: the kill lands mid-fetch.
  const upstream = await upstreamWith(t, { dataBytes: 8 * 1024 * 1024, limitRate: '2m' })
  const dataDir = tempDir('narwhal-data-')
  const server = await spawnServer({
    dataDir,
    logFile: path.join(tempDir('narwhal-log-'), 'server.log'),
    trustedKeys: [],
    args: ['--workers', '2', '--upstream', upstream.nginx.url, '--upstream-key', upstream.key.publicKey],
    env: { NARWHAL_LOG_LEVEL: 'debug' }
  })
  t.after(async () => { await server.stop() })
  await eventually(() => server.log().split('"msg":"worker listening"').length === 3, 'both workers listen')
  const { url, expected } = await dataNar(server, upstream)

  // The first client starts the fetch; its worker is the one that logged it.
  const first = await fetch(`${server.url}/${url}`, { headers: { connection: 'close' } })
  assert.equal(first.status, 200)
  const reader = (first.body as ReadableStream<Uint8Array>).getReader()
  let received = 0
  while (received < 256 * 1024) {
    const { value, done } = await reader.read()
    assert.ok(done !== true, 'the first client\'s body ended before the kill')
    received += value.length
  }
  const fetching = server.log().split('\n').filter(l => l.includes('"msg":"fetching NAR from upstream"'))
  assert.equal(fetching.length, 1, 'one worker fetches')
  const holder = (JSON.parse(fetching[0] as string) as { pid: number }).pid

  // 15 more, each on its own connection (the primary hands them to the workers in turn): the
  // holder's join its fetch, the other's wait for its turn.
  // A client of the killed worker may not have had its headers yet: its connection is reset.
  const others = Array.from({ length: 15 }, async () => {
    const response = await fetch(`${server.url}/${url}`, { headers: { connection: 'close' }, signal: AbortSignal.timeout(60_000) })
      .catch((err: unknown) => err instanceof Error && err.name === 'TimeoutError' ? 'hung' : 'cut')
    if (typeof response === 'string') return response
    return response.status === 200 ? await bodyOrCut(response) : response.status
  })
  await new Promise(resolve => setTimeout(resolve, 500))
  process.kill(holder, 'SIGKILL')

  // The dead worker's first client: cut short, never a whole NAR.
  let cut = false
  for (;;) {
    try {
      const { value, done } = await reader.read()
      if (done === true) break
      received += value.length
    } catch {
      cut = true
      break
    }
  }
  assert.ok(cut && received < expected.length, `the killed worker's client got a cut response (${received} of ${expected.length} bytes)`)
  const outcomes = await Promise.all(others)
  const whole = outcomes.filter(o => Buffer.isBuffer(o))
  for (const body of whole) assert.ok(body.equals(expected), 'a client that received a whole body received the upstream NAR exactly')
  assert.ok(outcomes.every(o => Buffer.isBuffer(o) || o === 'cut'), `every other client got the NAR or a cut response: ${outcomes.filter(o => !Buffer.isBuffer(o)).join(', ')}`)
  assert.ok(whole.length >= 1, `the other worker's waiters were served (${whole.length} of 15 whole)`)
  // The other worker fetched it again, once.
  assert.equal((await narGets(upstream)).filter(l => l.startsWith(`GET /${url} `)).length, 2)

  // Real Nix substitutes the closure (the primary has restarted the dead worker meanwhile).
  const store = await substitute(server.url, upstream.closure.top, [upstream.key.publicKey])
  assertSameFiles(store, upstream.closure)
  await nixOk(['store', 'verify', '--recursive', '--store', store, upstream.closure.top], { config: [`trusted-public-keys = ${upstream.key.publicKey}`] })

  // Nothing half-written left behind: no temp file, every stored NAR named by a narinfo, fsck clean.
  await eventually(async () => (await (await backendFor(dataDir)).stored()).length === upstream.closure.all.length, 'only the closure\'s NARs are stored')
  const fsck = await run('node', [CLI, 'fsck', '--data', dataDir, ...(await backendFor(dataDir)).args])
  assert.equal(fsck.code, 0, fsck.stdout + fsck.stderr)
})

test('two replicas: the one fetching a NAR killed mid-fetch releases its turn with its session; the other\'s waiters fetch it themselves and it substitutes', async (t) => {
  const upstream = await upstreamWith(t, { dataBytes: 8 * 1024 * 1024, limitRate: '2m' })
  const [a, b] = await replicasOf(t, upstream)
  const { url, expected } = await dataNar(a, upstream)

  const first = await fetch(`${a.url}/${url}`)
  assert.equal(first.status, 200)
  const firstBody = bodyOrCut(first)
  await eventually(() => a.log().includes('"msg":"fetching NAR from upstream"'), 'replica a fetches')
  const waiters = Array.from({ length: 4 }, async () => {
    const response = await fetch(`${b.url}/${url}`, { signal: AbortSignal.timeout(60_000) })
    assert.equal(response.status, 200)
    return await bodyOrCut(response)
  })
  await new Promise(resolve => setTimeout(resolve, 500))
  assert.ok(!b.log().includes('"msg":"fetching NAR from upstream"'), 'replica b waits for a\'s fetch')
  await a.kill()

  assert.equal(await firstBody, 'cut', 'the killed replica\'s client got a cut response')
  for (const body of await Promise.all(waiters)) assert.ok(body !== 'cut' && body.equals(expected), 'b\'s waiters got the whole NAR')
  assert.equal((await narGets(upstream)).filter(l => l.startsWith(`GET /${url} `)).length, 2, 'b fetched it once more')

  const trust = [`trusted-public-keys = ${upstream.key.publicKey}`]
  const store = tempDir('narwhal-client-store-')
  await nixOk(['copy', '--from', b.url, '--to', store, upstream.closure.top], { config: trust })
  await nixOk(['store', 'verify', '--recursive', '--store', store, upstream.closure.top], { config: trust })
  assertSameFiles(store, upstream.closure)
})
