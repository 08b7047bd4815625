/**
 * `narwhal serve --workers 2` as a real process tree (a primary and two node:cluster workers),
 * judged by the real Nix client and by the processes themselves: the first start happens once,
 * a closure pushed with `nix copy --to` substitutes and verifies, requests are answered by both
 * workers (their pids are read from the log, never from responses) and /metrics counts all of
 * them wherever it lands, identical uploads through both workers leave one row, a worker killed
 * with SIGKILL comes back without touching the other worker's upload in flight, SIGTERM stops
 * every process with 0, and the workers do not outlive a killed primary.
 *
 * The servers log at debug: one line per request, carrying the pid of the worker that answered.
 */
import { test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { existsSync, readdirSync, readFileSync, readlinkSync } from 'node:fs'
import http from 'node:http'
import { createServer } from 'node:net'
import path from 'node:path'
import { openDataDir } from '../../src/cache/open-cache.js'
import { openDatabase } from '../../src/db/database.js'
import { generateKeyPair } from '../../src/signing/keys.js'
import { sqliteOnly, backendFor } from '../helpers/backend.js'
import { buildClosure, netrcFile, nixOk, runOk, tempDir } from '../helpers/nix.js'
import { CLI, createToken, freePort, spawnServer, type ServerProcess } from '../helpers/server-process.js'
import { collect, freshNar, makeNarinfo, sleep } from '../helpers/upload.js'

interface LogLine { msg?: string, pid?: number, worker?: number, workerPid?: number, method?: string, url?: string, status?: number, code?: number | null }

function logLines (server: ServerProcess): LogLine[] {
  return server.log().split('\n').filter(l => l.startsWith('{')).map(l => JSON.parse(l) as LogLine)
}

/** The pid of each worker slot, from the primary's latest "worker listening" line for it. */
function workerPids (server: ServerProcess): Map<number, number> {
  const pids = new Map<number, number>()
  for (const line of logLines(server)) {
    if (line.msg === 'worker listening' && line.worker !== undefined && line.workerPid !== undefined) pids.set(line.worker, line.workerPid)
  }
  return pids
}

/**
 * The pids of the workers that answered the `count` requests matching `match`, once all of them
 * are in the log (workers write their log lines asynchronously, a moment after the answer).
 */
async function answeredBy (server: ServerProcess, count: number, match: (line: LogLine) => boolean): Promise<number[]> {
  const lines = await until(() => {
    const found = logLines(server).filter(l => l.msg === 'request' && match(l))
    return found.length >= count ? found : undefined
  }, `${count} request lines in the log`)
  return [...new Set(lines.map(l => l.pid ?? 0))].sort()
}

async function until<T> (check: () => T | undefined | false, what: string, ms = 60_000): Promise<T> {
  const deadline = Date.now() + ms
  for (;;) {
    const value = check()
    if (value !== undefined && value !== false) return value
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await sleep(50)
  }
}

async function bothWorkersListening (server: ServerProcess): Promise<number[]> {
  return await until(() => { const pids = workerPids(server); return pids.size === 2 ? [...pids.values()].sort() : undefined }, 'two workers listening')
}

/** A process that exists and is not a zombie. */
function alive (pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'))
  } catch {
    return false
  }
}

/** The temp files (store/tmp) the process holds open: its uploads in flight. */
function openTempFiles (pid: number, tmpDir: string): string[] {
  const fdDir = `/proc/${pid}/fd`
  return readdirSync(fdDir).flatMap(fd => {
    try {
      const target = readlinkSync(path.join(fdDir, fd))
      return target.startsWith(tmpDir + '/') ? [target] : []
    } catch {
      return []
    }
  })
}

/**
 * One request on a connection of its own: node:cluster hands every new connection to the next
 * worker in turn, while fetch would keep reusing one connection (and so one worker).
 */
function send (url: string, options: { method?: string, body?: Uint8Array | string, token?: string } = {}): Promise<{ status: number, body: string, bytes: Buffer }> {
  return new Promise((resolve, reject) => {
    const headers = options.token === undefined ? {} : { authorization: `Bearer ${options.token}` }
    const req = http.request(url, { method: options.method ?? 'GET', headers, agent: false }, res => {
      collect(res).then(bytes => { resolve({ status: res.statusCode ?? 0, body: bytes.toString('utf8'), bytes }) }, reject)
    })
    req.on('error', reject)
    req.end(options.body)
  })
}

async function startWorkers (t: TestContext, options: { dataDir: string, trustedKeys?: string[] }): Promise<ServerProcess> {
  const logFile = path.join(tempDir('narwhal-workers-log-'), 'server.log')
  const server = await spawnServer({
    dataDir: options.dataDir,
    logFile,
    trustedKeys: options.trustedKeys ?? [],
    args: ['--workers', '2'],
    env: { NARWHAL_LOG_LEVEL: 'debug' }
  })
  t.after(async () => { await server.stop() })
  return server
}

test('serve --workers 2: one first start, nix copy to and from, requests spread over both workers, /metrics for the whole server', async (t) => {
  const dataDir = tempDir('narwhal-workers-data-')
  const server = await startWorkers(t, { dataDir })
  const pids = await bothWorkersListening(server)
  assert.ok(!pids.includes(server.child.pid ?? 0), 'the primary serves nothing itself')

  const text = server.log()
  assert.equal(text.match(/narwhal: first start/g)?.length, 1, `the first-start message is printed once:\n${text}`)
  assert.equal(text.match(/ password nw_/g)?.length, 1, 'one token is made and shown')
  const publicKey = /extra-trusted-public-keys = (\S+)/.exec(text)?.[1]
  const token = /machine 127\.0\.0\.1 login narwhal password (nw_\S+)/.exec(text)?.[1]
  const secretKey = /secret key file: +(\S+)/.exec(text)?.[1]
  assert.ok(publicKey !== undefined && token !== undefined && secretKey !== undefined, text)

  const closure = await buildClosure()
  await nixOk(['copy', '--to', `${server.url}?secret-key=${secretKey}`, closure.top], { config: [`netrc-file = ${netrcFile(token)}`] })
  const store = tempDir('narwhal-workers-store-')
  const trust = `trusted-public-keys = ${publicKey}`
  await nixOk(['copy', '--from', server.url, '--to', store, closure.top], { config: [trust] })
  for (const p of closure.all) assert.ok(existsSync(path.join(store, p)), `${p} was substituted`)
  await nixOk(['store', 'verify', '--recursive', '--store', store, closure.top], { config: [trust] })

  for (let i = 0; i < 10; i++) assert.equal((await send(`${server.url}/nix-cache-info?probe=${i}`)).status, 200)
  assert.deepEqual(await answeredBy(server, 10, l => l.url?.startsWith('/nix-cache-info?probe=') === true), pids,
    'ten connections were answered by both workers, and only by them')

  // Whichever worker a scrape lands on, it reports the requests both answered: exactly as many
  // as the workers logged (one worker alone would report about half).
  const logged = logLines(server).filter(l => l.msg === 'request' && l.url?.startsWith('/nix-cache-info') === true && l.status === 200).length
  const scraped: number[] = []
  for (let i = 0; i < 4; i++) {
    const metrics = await send(`${server.url}/metrics`)
    assert.equal(metrics.status, 200, metrics.body)
    scraped.push(Number(/^narwhal_http_requests_total\{method="GET",route="\/nix-cache-info",status="200"\} (\d+)$/m.exec(metrics.body)?.[1]))
  }
  assert.deepEqual(scraped, [logged, logged, logged, logged])
  assert.deepEqual(await answeredBy(server, 4, l => l.url === '/metrics'), pids, 'the scrapes landed on both workers')

  // Every worker reads the gc record from the same database: one run is reported once, not twice.
  await runOk('node', [CLI, 'gc', '--data', dataDir, ...(await backendFor(dataDir)).args])
  const metrics = await send(`${server.url}/metrics`)
  assert.match(metrics.body, /^narwhal_gc_runs_total 1$/m)
})

test('serve --workers 2: identical uploads through both workers leave one row; a killed worker comes back and leaves the other\'s upload alone; SIGTERM stops everything with 0', sqliteOnly('reads rows from the SQLite file and watches temp files in store/tmp held open by a worker'), async (t) => {
  const key = generateKeyPair('test-uploader-1')
  const dataDir = tempDir('narwhal-workers-data-')
  const token = await createToken(dataDir, 'push')
  const server = await startWorkers(t, { dataDir, trustedKeys: [key.publicKeyText] })
  const [a = 0, b = 0] = await bothWorkersListening(server)
  const tmpDir = path.join(dataDir, 'store', 'tmp')

  // The same NAR, then the same narinfo, from eight connections at once. The primary hands each
  // connection to a worker that is free, not strictly in turn, so one worker may take a whole
  // round: rounds (each with a fresh path) go on until both workers answered in the same round.
  const db = openDatabase(path.join(dataDir, 'narwhal.sqlite'), { readonly: true })
  t.after(() => { db.close() })
  const rows = (table: string, column: string, value: string): number =>
    (db.prepare(`SELECT count(*) AS n FROM ${table} WHERE ${column} = ?`).get(value) as { n: number }).n
  let spanned = 0
  for (let round = 0; round < 10 && spanned === 0; round++) {
    const nar = await freshNar('zstd', { randomBytes: 2 * 1024 * 1024 })
    const narAnswers = await Promise.all(Array.from({ length: 8 }, async () => await send(`${server.url}/${nar.url}`, { method: 'PUT', body: nar.bytes, token })))
    for (const answer of narAnswers) assert.ok(answer.status === 200 || answer.status === 201, `${answer.status} ${answer.body}`)
    const narinfo = makeNarinfo(nar, { keys: [key.secretKey] })
    const narinfoAnswers = await Promise.all(Array.from({ length: 8 }, async () =>
      await send(`${server.url}/${nar.hashPart}.narinfo`, { method: 'PUT', body: narinfo, token })))
    assert.deepEqual(narinfoAnswers.map(x => x.status).sort(), [200, 200, 200, 200, 200, 200, 200, 201], narinfoAnswers.map(x => x.body).join(''))
    assert.equal(rows('nar_files', 'file_hash', nar.fileHash), 1)
    assert.equal(rows('narinfos', 'hash_part', nar.hashPart), 1)
    assert.ok((await send(`${server.url}/${nar.url}`)).bytes.equals(nar.bytes))
    assert.equal((await send(`${server.url}/${nar.hashPart}.narinfo`)).body, narinfo)
    const narBy = await answeredBy(server, 8, l => l.method === 'PUT' && l.url === `/${nar.url}`)
    const narinfoBy = await answeredBy(server, 8, l => l.method === 'PUT' && l.url === `/${nar.hashPart}.narinfo`)
    if (narBy.length === 2 && narinfoBy.length === 2) spanned = round + 1
  }
  assert.ok(spanned > 0, 'in some round both workers took identical NAR and narinfo uploads at once')
  await until(() => readdirSync(tmpDir).length === 0, 'no temp file left by the identical uploads')

  // An upload stopped halfway, so its temp file sits in store/tmp, open in one worker.
  const slow = await freshNar('none', { randomBytes: 1024 * 1024 })
  const half = Math.floor(slow.bytes.length / 2)
  const upload = http.request(`${server.url}/${slow.url}`,
    { method: 'PUT', agent: false, headers: { authorization: `Bearer ${token}`, 'content-length': slow.bytes.length } })
  const uploaded = new Promise<{ status: number, body: string }>((resolve, reject) => {
    upload.on('response', res => { collect(res).then(bytes => { resolve({ status: res.statusCode ?? 0, body: bytes.toString('utf8') }) }, reject) })
    upload.on('error', reject)
  })
  upload.write(slow.bytes.subarray(0, half))
  const [holder, part] = await until(() => {
    for (const pid of [a, b]) {
      const files = openTempFiles(pid, tmpDir)
      if (files[0] !== undefined) return [pid, files[0]] as const
    }
    return undefined
  }, 'the half-uploaded NAR\'s temp file')
  const victim = holder === a ? b : a

  process.kill(victim, 'SIGKILL')
  await until(() => logLines(server).some(l => l.msg === 'worker died; restarting it' && l.workerPid === victim), 'the primary to see the worker die')
  for (let i = 0; i < 6; i++) assert.equal((await send(`${server.url}/nix-cache-info`)).status, 200, 'the server answers while a worker is gone')
  const replacement = await until(() => [...workerPids(server).values()].find(pid => pid !== a && pid !== b), 'the restarted worker')
  assert.ok(alive(replacement))
  assert.ok(!alive(victim))
  assert.ok(existsSync(part), 'the restarted worker did not empty store/tmp under the other worker\'s upload')
  assert.deepEqual(openTempFiles(holder, tmpDir), [part])

  upload.end(slow.bytes.subarray(half))
  const finished = await uploaded
  assert.equal(finished.status, 201, finished.body)
  assert.ok((await send(`${server.url}/${slow.url}`)).bytes.equals(slow.bytes), 'the upload that spanned the restart is served whole')
  for (let i = 0; i < 6; i++) assert.equal((await send(`${server.url}/nix-cache-info?after-restart=${i}`)).status, 200)
  assert.deepEqual(await answeredBy(server, 6, l => l.url?.startsWith('/nix-cache-info?after-restart=') === true), [holder, replacement].sort(),
    'the new worker serves beside the old one')

  const processes = [server.child.pid ?? 0, holder, replacement]
  await server.stop()
  assert.equal(server.child.exitCode, 0, server.log().slice(-2000))
  for (const pid of processes) assert.ok(!alive(pid), `process ${pid} is gone`)
  const stopped = logLines(server).filter(l => l.msg === 'worker stopped')
  assert.deepEqual(stopped.map(l => l.workerPid).sort(), [holder, replacement].sort())
  assert.ok(stopped.every(l => l.code === 0), 'the workers closed themselves and exited 0')
})

test('serve --workers 2: when the primary is killed the workers close gracefully (pending read times are written) and exit', async (t) => {
  const key = generateKeyPair('test-uploader-1')
  const dataDir = tempDir('narwhal-workers-data-')
  const token = await createToken(dataDir, 'push')
  const server = await startWorkers(t, { dataDir, trustedKeys: [key.publicKeyText] })
  const pids = await bothWorkersListening(server)
  const nar = await freshNar('zstd')
  assert.equal((await send(`${server.url}/${nar.url}`, { method: 'PUT', body: nar.bytes, token })).status, 201)
  assert.equal((await send(`${server.url}/${nar.hashPart}.narinfo`, { method: 'PUT', body: makeNarinfo(nar, { keys: [key.secretKey] }), token })).status, 201)
  const backend = await backendFor(dataDir)
  const opened = await openDataDir({ dataDir, database: backend.database, storage: { url: backend.storage } })
  t.after(async () => { await opened.close() })
  const lastUse = async (): Promise<number> => {
    const times = await opened.metadata.retention.lastUse(nar.hashPart)
    assert.ok(times !== undefined)
    return times.narinfo
  }
  // As if uploaded a day ago; the read below is then noted in memory, to be written within 5 s.
  await opened.metadata.retention.setLastUse([nar.hashPart], [], Date.now() - 86_400_000)
  const readAt = Date.now()
  assert.equal((await send(`${server.url}/${nar.hashPart}.narinfo`)).status, 200)

  await server.kill()
  await until(() => pids.every(pid => !alive(pid)), 'the workers to exit after their primary', 30_000)
  // Written by the closing worker (or, rarely, by its 5 s timer just before the kill). A worker
  // that exited on the spot would leave the day-old time.
  const recorded = await lastUse()
  assert.ok(recorded >= readAt - 60_000, `the read was recorded: last use ${new Date(recorded).toISOString()}`)
})

test('serve --workers 2 on a port already taken exits 1 instead of restarting workers forever', async () => {
  const port = await freePort()
  const taken = createServer()
  taken.listen(port, '127.0.0.1')
  await once(taken, 'listening')
  try {
    const child = spawn('node', [CLI, 'serve', '--data', tempDir('narwhal-workers-data-'), '--listen', `127.0.0.1:${port}`, '--workers', '2'],
      { stdio: ['ignore', 'pipe', 'pipe'], env: Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('NARWHAL_'))) })
    let output = ''
    child.stdout.on('data', (d: Buffer) => { output += d.toString() })
    child.stderr.on('data', (d: Buffer) => { output += d.toString() })
    const [code] = await once(child, 'exit') as [number]
    assert.equal(code, 1, output)
    assert.match(output, /EADDRINUSE/)
    assert.match(output, /worker exited before the server ever listened; stopping/)
  } finally {
    taken.close()
  }
})
