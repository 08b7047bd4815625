/**
 * Moving a single-node cache to several machines: `narwhal export --data DIR --database
 * postgres://… --storage s3://…` against the real engines (PostgreSQL, Ceph's RADOS Gateway) and
 * the real Nix. A cache filled by a real `narwhal serve` with `nix copy` (a token, a pin, a build
 * log, provenance, audit entries) is moved, killed half-way and run again, run a third time as a
 * no-op; then a replica on PostgreSQL + S3 serves it all: Nix substitutes the closure into an
 * empty store, `nix log` finds the log, the old token still pushes, the pin holds through gc.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import path from 'node:path'
import { createInterface } from 'node:readline'
import pg from 'pg'
import { buildClosure, netrcFile, nixKeyPair, nixOk, run, runOk, tempDir } from '../helpers/nix.js'
import { createDatabase, postgresEngine } from '../helpers/postgres.js'
import { hashPart, sharedCache, spawnReplica, statusOf } from '../helpers/replicas.js'
import { awsEnv, listBucket } from '../helpers/s3.js'
import { CLI, createToken, spawnServer, type ServerProcess } from '../helpers/server-process.js'
import { parseDatabaseUrl, type PostgresLocation } from '../../src/db/database-url.js'
import { PgMetadataStore } from '../../src/db/postgres/store.js'
import { openSqliteMetadataStore } from '../../src/db/sqlite/store.js'
import { layoutFor } from '../../src/storage/layout.js'

const TABLES = ['narinfos', 'nar_files', 'narinfo_refs', 'tokens', 'pins', 'aux_files', 'provenance', 'audit_log', 'upstream_narinfos', 'gc_runs']

/** Rows in each of narwhal's tables. */
async function rowCounts (client: pg.Client): Promise<Record<string, number>> {
  const counts: Record<string, number> = {}
  for (const table of TABLES) counts[table] = Number((await client.query<{ n: string }>(`SELECT count(*) AS n FROM ${table}`)).rows[0]?.n)
  return counts
}

interface MoveJson {
  objects: { nars: { uploaded: number }, narinfos: { uploaded: number }, otherFiles: { uploaded: number }, leftOut: unknown[] } | null
  rows: {
    resumed: boolean
    narinfos: { created: number, present: number }
    tokens: { created: number, present: number }
    pins: { created: number, present: number }
    auxFiles: { created: number, present: number }
    auditEntries: { created: number, present: number }
    leftOut: unknown[]
    conflicts: unknown[]
  } | null
}

test('a single-node cache moved to PostgreSQL + S3 (killed half-way, run again, run a third time) is served whole by a replica: closure, log, old token, pin, provenance, audit', { timeout: 6 * 60_000 }, async (t) => {
  const key = await nixKeyPair('move-test-1')
  const servers: ServerProcess[] = []
  t.after(async () => { await Promise.all(servers.map(async s => { await s.stop() })) })

  // The single server, filled as a team would: pushes with a token, a build log, a pin.
  const oldData = tempDir('narwhal-move-old-')
  const old = await spawnServer({ dataDir: oldData, logFile: path.join(tempDir('narwhal-move-log-'), 'old.log'), trustedKeys: [key.publicKey] })
  servers.push(old)
  const token = await createToken(oldData, 'push')
  const netrc = [`netrc-file = ${netrcFile(token)}`]
  const kept = await buildClosure()
  const dropped = await buildClosure()
  for (const closure of [kept, dropped]) {
    await nixOk(['copy', '--to', `${old.url}?secret-key=${key.secretFile}`, closure.top], { config: netrc })
  }
  await nixOk(['store', 'copy-log', '--to', old.url, kept.top], { config: netrc })
  await runOk('node', [CLI, 'pin', 'add', kept.top, '--data', oldData, '--note', 'release'])
  assert.equal(await statusOf(`${old.url}/log/${path.basename(kept.drv)}`), 200)
  await old.stop()

  const source = openSqliteMetadataStore(layoutFor(oldData).database)
  const sourceAudit = await source.audit.query({ limit: 100_000 })
  const sourceProvenance = await source.provenance.ofPath(hashPart(kept.top))
  const sourceTokens = await source.tokens.list()
  await source.close()
  assert.ok(sourceAudit.length >= 8, `the pushes were audited: ${sourceAudit.length}`)
  assert.equal(sourceProvenance.length, 1)

  const { engine, db, bucket, storage, env: replicaEnv } = await sharedCache(t)
  const env = { ...awsEnv(engine), PATH: process.env.PATH ?? '' }
  const exportArgs = ['export', '--data', oldData, '--database', db.url, '--storage', storage]
  assert.equal((await run('node', [CLI, 'migrate', '--database', db.url])).code, 0)
  const client = new pg.Client({ connectionString: db.url })
  await client.connect()
  // db.drop (registered first, so run first) ends this session.
  client.on('error', () => {})
  t.after(async () => { await client.end() })

  // Killed half-way: the pins are held back by a lock (reads pass, writes wait), so the move is
  // stopped after its narinfos and before its pins, logs and audit log.
  const blocker = new pg.Client({ connectionString: db.url })
  await blocker.connect()
  await blocker.query('BEGIN')
  await blocker.query('LOCK TABLE pins IN EXCLUSIVE MODE')
  const child = spawn('node', [CLI, ...exportArgs, '--batch', '1', '-v'], { env, stdio: ['ignore', 'pipe', 'pipe'] })
  let stderr = ''
  child.stderr.on('data', (chunk: Buffer) => { stderr += chunk.toString() })
  const exited = new Promise<number | null>(resolve => child.on('exit', (code) => resolve(code)))
  const lines: string[] = []
  for await (const line of createInterface({ input: child.stdout })) {
    lines.push(line)
    if (line === 'moving pins') break
  }
  const waitingSince = Date.now()
  for (;;) {
    const waiting = await blocker.query("SELECT 1 FROM pg_locks l JOIN pg_class c ON c.oid = l.relation WHERE c.relname = 'pins' AND NOT l.granted")
    if (waiting.rows.length > 0) break
    assert.ok(Date.now() - waitingSince < 4000 && child.exitCode === null, `the move waits for the pins' lock:\n${lines.join('\n')}\n${stderr}`)
    await new Promise(resolve => setTimeout(resolve, 20))
  }
  assert.ok(child.kill('SIGKILL'))
  await exited
  await blocker.query('ROLLBACK')
  await blocker.end()
  assert.ok(lines.includes(`moved ${kept.top}`), lines.join('\n'))
  const partial = await rowCounts(client)
  assert.equal(partial.narinfos, 6, 'every narinfo was moved before the kill')
  assert.deepEqual([partial.pins, partial.aux_files, partial.audit_log], [0, 0, 0], 'nothing after the narinfos was')
  assert.equal((await client.query('SELECT 1 FROM cache_moves WHERE finished_at IS NULL')).rows.length, 1, 'the move is recorded as unfinished')
  // Each moved narinfo's NAR is in the bucket under the name its row gives.
  const objects = await listBucket(engine, bucket)
  for (const row of (await client.query<{ narinfo: string }>('SELECT narinfo FROM narinfos')).rows) {
    const url = /^URL: (.*)$/m.exec(row.narinfo)?.[1] ?? ''
    assert.ok(objects.has(url), `${url} is in the bucket`)
  }

  // Run again: finishes the job.
  const second = await run('node', [CLI, ...exportArgs, '--json'], { env })
  assert.equal(second.code, 0, second.stdout + second.stderr)
  const resumed = JSON.parse(second.stdout) as MoveJson
  assert.equal(resumed.rows?.resumed, true)
  assert.deepEqual([resumed.rows?.narinfos.created, resumed.rows?.narinfos.present], [0, 6], 'no narinfo moved twice')
  assert.deepEqual([resumed.rows?.pins.created, resumed.rows?.auxFiles.created, resumed.rows?.auditEntries.created], [1, 1, sourceAudit.length])
  assert.deepEqual([resumed.rows?.leftOut, resumed.rows?.conflicts, resumed.objects?.leftOut], [[], [], []])
  const moved = await rowCounts(client)
  assert.deepEqual(moved, {
    // References: top -> dep -> data in each closure.
    narinfos: 6,
    nar_files: 6,
    narinfo_refs: 4,
    tokens: sourceTokens.length,
    pins: 1,
    aux_files: 1,
    provenance: 6,
    audit_log: sourceAudit.length,
    upstream_narinfos: 0,
    gc_runs: 0
  })

  // A third run is a no-op.
  const third = JSON.parse((await run('node', [CLI, ...exportArgs, '--json'], { env })).stdout) as MoveJson
  assert.deepEqual([third.objects?.nars.uploaded, third.objects?.narinfos.uploaded, third.objects?.otherFiles.uploaded], [0, 0, 0])
  assert.deepEqual([third.rows?.narinfos.created, third.rows?.tokens.created, third.rows?.pins.created, third.rows?.auxFiles.created, third.rows?.auditEntries.created],
    [0, 0, 0, 0, 0])
  assert.deepEqual(await rowCounts(client), moved, 'nothing duplicated')
  assert.equal((await client.query('SELECT 1 FROM cache_moves WHERE finished_at IS NOT NULL')).rows.length, 1)

  // A replica on the moved cache, with a data folder of its own.
  const replica = await spawnReplica(t, 'moved', [key.publicKey], replicaEnv)
  const trust = [`trusted-public-keys = ${key.publicKey}`]
  const store = tempDir('narwhal-move-store-')
  await nixOk(['copy', '--from', replica.url, '--to', store, kept.top], { config: trust })
  await nixOk(['store', 'verify', '--recursive', '--store', store, kept.top], { config: trust })
  const log = await nixOk(['log', '--store', tempDir('narwhal-move-store-'), kept.top], { config: [...trust, `substituters = ${replica.url}`] })
  assert.match(log, /building top/)

  // The old token pushes at the replica; one it never issued does not.
  const put = async (bearer: string): Promise<number> =>
    await statusOf(`${replica.url}/log/${hashPart(kept.top)}-after-move.drv`, { method: 'PUT', body: 'log', headers: { authorization: `Bearer ${bearer}` } })
  assert.ok(await put(token) < 300, 'the token made before the move works at the replica')
  assert.equal(await put(token.slice(0, -4) + 'AAAA'), 401)

  // Provenance and the audit log came along, token ids included.
  const target = await PgMetadataStore.open(parseDatabaseUrl(db.url) as PostgresLocation)
  try {
    assert.deepEqual(await target.provenance.ofPath(hashPart(kept.top)), sourceProvenance)
    const audit = await target.audit.query({ limit: 100_000 })
    const strip = (rows: typeof audit): unknown[] => rows.map(({ id: _id, ...rest }) => rest)
    assert.deepEqual(strip(audit.slice(0, sourceAudit.length)), strip(sourceAudit))
    assert.deepEqual((await target.tokens.list()).map(t => t.id), sourceTokens.map(t => t.id), 'token ids are kept')
  } finally {
    await target.close()
  }

  // gc at the replica's settings: the unpinned closure goes, the pinned one stays.
  const gc = await run('node', [CLI, 'gc', '--max-size', '0', '--keep-recent', '0s', '--data', tempDir('narwhal-move-cli-')],
    { env: { ...process.env, ...replicaEnv } })
  assert.equal(gc.code, 0, gc.stdout + gc.stderr)
  assert.equal(await statusOf(`${replica.url}/${hashPart(dropped.top)}.narinfo`), 404, `gc ran:\n${gc.stdout}`)
  for (const storePath of kept.all) assert.equal(await statusOf(`${replica.url}/${hashPart(storePath)}.narinfo`), 200, `${storePath} is pinned`)
})

test('a database that holds another cache is refused, naming the step and writing nothing; --merge adds to it', { timeout: 2 * 60_000 }, async (t) => {
  const db = await createDatabase(postgresEngine())
  t.after(db.drop)
  const elsewhere = tempDir('narwhal-move-other-')
  const theirs = (await runOk('node', [CLI, 'token', 'create', '--scope', 'read', '--database', db.url, '--data', elsewhere])).trim()
  const oldData = tempDir('narwhal-move-old-')
  const ours = await createToken(oldData, 'push')

  const refused = await run('node', [CLI, 'export', '--data', oldData, '--database', db.url])
  assert.equal(refused.code, 2)
  assert.match(refused.stderr, /checking the target database: the target database already holds another cache: 1 tokens.*--merge/)
  const client = new pg.Client({ connectionString: db.url })
  await client.connect()
  // db.drop (registered first, so run first) ends this session.
  client.on('error', () => {})
  t.after(async () => { await client.end() })
  assert.deepEqual((await client.query('SELECT id::int FROM tokens')).rows, [{ id: 1 }], 'nothing was written')
  assert.deepEqual((await client.query('SELECT * FROM cache_moves')).rows, [])

  const merged = await run('node', [CLI, 'export', '--data', oldData, '--database', db.url, '--merge'])
  assert.equal(merged.code, 0, merged.stdout + merged.stderr)
  assert.match(merged.stdout, /tokens: 1 moved, 0 already there/)
  // Both tokens are known to a server on the merged database: the moved one under a new id, since 1 was taken.
  const server = await spawnServer({ dataDir: tempDir('narwhal-move-replica-'), logFile: path.join(tempDir('narwhal-move-log-'), 'r.log'), trustedKeys: [], env: { NARWHAL_DATABASE_URL: db.url } })
  t.after(async () => { await server.stop() })
  const put = async (bearer: string): Promise<number> =>
    await statusOf(`${server.url}/log/${'0'.repeat(32)}-moved.drv`, { method: 'PUT', body: 'log', headers: { authorization: `Bearer ${bearer}` } })
  assert.deepEqual([await put(ours) < 300, await put(theirs), await put(ours.slice(0, -4) + 'AAAA')], [true, 403, 401])
  assert.deepEqual((await client.query('SELECT id::int FROM tokens ORDER BY id')).rows, [{ id: 1 }, { id: 2 }])
  // And again: the move is recorded, so it is resumed, not refused, and adds nothing.
  const again = await run('node', [CLI, 'export', '--data', oldData, '--database', db.url])
  assert.equal(again.code, 0, again.stderr)
  assert.match(again.stdout, /resuming an earlier run.*\n[^]*tokens: 0 moved, 1 already there/)
})

test('--database alone moves the rows and leaves the NARs in the data folder, which `serve --data DIR --database URL` then serves', { timeout: 3 * 60_000 }, async (t) => {
  const key = await nixKeyPair('move-test-1')
  const dataDir = tempDir('narwhal-move-old-')
  const old = await spawnServer({ dataDir, logFile: path.join(tempDir('narwhal-move-log-'), 'old.log'), trustedKeys: [key.publicKey] })
  const token = await createToken(dataDir, 'push')
  const closure = await buildClosure()
  await nixOk(['copy', '--to', `${old.url}?secret-key=${key.secretFile}`, closure.top], { config: [`netrc-file = ${netrcFile(token)}`] })
  await old.stop()

  const db = await createDatabase(postgresEngine())
  t.after(db.drop)
  const moved = await run('node', [CLI, 'export', '--data', dataDir, '--database', db.url, '-v'])
  assert.equal(moved.code, 0, moved.stdout + moved.stderr)
  for (const storePath of closure.all) assert.match(moved.stdout, new RegExp(`^moved ${storePath}$`, 'm'))
  assert.doesNotMatch(moved.stdout, /uploaded/, 'no object was copied anywhere')

  const server = await spawnServer({
    dataDir, logFile: path.join(tempDir('narwhal-move-log-'), 'pg.log'), trustedKeys: [key.publicKey], env: { NARWHAL_DATABASE_URL: db.url }
  })
  t.after(async () => { await server.stop() })
  const trust = [`trusted-public-keys = ${key.publicKey}`]
  const store = tempDir('narwhal-move-store-')
  await nixOk(['copy', '--from', server.url, '--to', store, closure.top], { config: trust })
  await nixOk(['store', 'verify', '--recursive', '--store', store, closure.top], { config: trust })
})

test('a second export into the same database while one runs stops at once, naming the reason and writing nothing; the first finishes; gc, fsck --repair and export wait for each other', { timeout: 2 * 60_000 }, async (t) => {
  const oldData = tempDir('narwhal-move-old-')
  await createToken(oldData, 'push')
  const { engine, db, storage } = await sharedCache(t)
  assert.equal((await run('node', [CLI, 'migrate', '--database', db.url])).code, 0)
  const env = { ...awsEnv(engine), PATH: process.env.PATH ?? '' }
  const exportArgs = [CLI, 'export', '--data', oldData, '--database', db.url, '--storage', storage]

  // A gc at a replica could remove objects the export finds in the bucket: while one runs, the export does not start.
  const replica = await PgMetadataStore.open(parseDatabaseUrl(db.url) as PostgresLocation)
  const duringGc = await replica.runExclusive('gc', async () => await run('node', exportArgs, { env }))
  await replica.close()
  assert.equal(duringGc.kind, 'ran')
  const refusedByGc = duringGc.kind === 'ran' ? duringGc.value : undefined
  assert.equal(refusedByGc?.code, 2, (refusedByGc?.stdout ?? '') + (refusedByGc?.stderr ?? ''))
  assert.match(refusedByGc?.stderr ?? '', /a gc is running at a replica of postgres:\/\/\S+ \(it holds the database's gc lock\).*nothing done/)

  // The first export is held mid-move, holding its lock: stopped (SIGSTOP) once it reaches the pins,
  // which a table lock keeps it from passing until it is stopped.
  const blocker = new pg.Client({ connectionString: db.url })
  await blocker.connect()
  // db.drop (registered first, so run first) ends this session and the next.
  blocker.on('error', () => {})
  t.after(async () => { await blocker.end() })
  await blocker.query('BEGIN')
  await blocker.query('LOCK TABLE pins IN EXCLUSIVE MODE')
  const first = spawn('node', [...exportArgs, '-v'], { env, stdio: ['ignore', 'pipe', 'pipe'] })
  let firstStderr = ''
  first.stderr.on('data', (chunk: Buffer) => { firstStderr += chunk.toString() })
  const firstExited = new Promise<number | null>(resolve => first.on('exit', (code) => resolve(code)))
  t.after(() => { first.kill('SIGKILL') })
  const lines: string[] = []
  const stdout = createInterface({ input: first.stdout })
  for await (const line of stdout) {
    lines.push(line)
    if (line === 'moving pins') break
  }
  assert.ok(first.kill('SIGSTOP'), `the first export reached the pins:\n${lines.join('\n')}\n${firstStderr}`)
  await blocker.query('ROLLBACK')

  const startedAt = Date.now()
  const second = await run('node', exportArgs, { env })
  assert.equal(second.code, 2, second.stdout + second.stderr)
  assert.match(second.stderr, /another export into postgres:\/\/\S+ is running \(it holds the database's export lock\); nothing done/)
  assert.equal(second.stdout, '')
  assert.ok(Date.now() - startedAt < 20_000, 'refused at once, not after waiting for the first')
  // And a gc or an fsck --repair at a replica waits for the export (an fsck without --repair only reads, and runs).
  const replicaArgs = ['--data', tempDir('narwhal-move-replica-'), '--database', db.url, '--storage', storage]
  const gc = await run('node', [CLI, 'gc', ...replicaArgs], { env })
  assert.equal(gc.code, 1, gc.stdout + gc.stderr)
  assert.match(gc.stderr, /a collection is running at another replica or command; nothing done/)
  const repair = await run('node', [CLI, 'fsck', '--repair', ...replicaArgs], { env })
  assert.equal(repair.code, 2, repair.stdout + repair.stderr)
  assert.match(repair.stderr, /an export, is running at another replica or command \(it holds the database's fsck lock\); nothing done/)
  const check = await run('node', [CLI, 'fsck', ...replicaArgs], { env })
  assert.equal(check.code, 0, check.stdout + check.stderr)
  const client = new pg.Client({ connectionString: db.url })
  await client.connect()
  client.on('error', () => {})
  t.after(async () => { await client.end() })
  assert.equal((await client.query('SELECT 1 FROM cache_moves')).rows.length, 1, 'the second recorded no move of its own')

  assert.ok(first.kill('SIGCONT'))
  const rest: string[] = []
  stdout.on('line', (line) => rest.push(line))
  assert.equal(await firstExited, 0, `the first export finished:\n${[...lines, ...rest].join('\n')}\n${firstStderr}`)
  assert.equal((await client.query('SELECT 1 FROM cache_moves WHERE finished_at IS NOT NULL')).rows.length, 1)
  // The lock went with the first: the next export runs (as a no-op).
  const third = await run('node', exportArgs, { env })
  assert.equal(third.code, 0, third.stdout + third.stderr)
  assert.match(third.stdout, /resuming an earlier run/)
})
