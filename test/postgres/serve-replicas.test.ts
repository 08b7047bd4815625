/**
 * Two real `narwhal serve` replicas on one PostgreSQL (`NARWHAL_DATABASE_URL`), on two ports: a
 * closure pushed with `nix copy` through one is substituted into an empty store through the
 * other; a token created with the CLI on the database works at both and, revoked, is refused at
 * both at once; a narinfo accepted at one is served by the other within a second; gc at one
 * makes both answer 404.
 *
 * The replicas share one data folder for their NAR bytes here (the S3 bucket is i20s3's side);
 * everything they agree on goes through the database.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import path from 'node:path'
import { buildClosure, netrcFile, nixKeyPair, nixOk, runOk, tempDir } from '../helpers/nix.js'
import { createDatabase, postgresEngine } from '../helpers/postgres.js'
import { CLI, spawnServer, type ServerProcess } from '../helpers/server-process.js'

function hashPart (storePath: string): string {
  return path.basename(storePath).slice(0, 32)
}

test('two serve replicas on one PostgreSQL: push through one, substitute through the other; tokens and gc count at both', { timeout: 5 * 60_000 }, async (t) => {
  const db = await createDatabase(postgresEngine())
  t.after(db.drop)
  const dataDir = tempDir('narwhal-replicas-data-')
  const env = { NARWHAL_DATABASE_URL: db.url }
  const key = await nixKeyPair('replica-test-1')
  const servers: ServerProcess[] = []
  t.after(async () => { await Promise.all(servers.map(async s => { await s.stop() })) })
  for (const name of ['a', 'b']) {
    servers.push(await spawnServer({ dataDir, logFile: path.join(tempDir('narwhal-replica-log-'), `${name}.log`), trustedKeys: [key.publicKey], env }))
  }
  const [a, b] = servers as [ServerProcess, ServerProcess]

  // A token made by the CLI on the database (not on any replica) works at both.
  const cli = async (args: string[]): Promise<string> => (await runOk('node', [CLI, ...args, '--data', dataDir, '--database', db.url])).trim()
  const token = await cli(['token', 'create', '--scope', 'push', '--name', 'ci'])
  const closure = await buildClosure()
  const top = hashPart(closure.top)
  const narinfoAt = async (server: ServerProcess, h: string): Promise<number> => {
    const response = await fetch(`${server.url}/${h}.narinfo`)
    await response.arrayBuffer()
    return response.status
  }
  assert.equal(await narinfoAt(b, top), 404, 'b has not got it yet (and remembers the miss)')

  await nixOk(['copy', '--to', `${a.url}?secret-key=${key.secretFile}`, closure.top], { config: [`netrc-file = ${netrcFile(token)}`] })
  const pushedAt = Date.now()
  while (await narinfoAt(b, top) !== 200) {
    assert.ok(Date.now() - pushedAt < 1000, 'a narinfo accepted at a is served by b within a second')
    await new Promise(resolve => setTimeout(resolve, 20))
  }
  t.diagnostic(`b served the narinfo ${Date.now() - pushedAt} ms after nix copy to a returned`)

  const store = tempDir('narwhal-replica-store-')
  await nixOk(['copy', '--from', b.url, '--to', store, closure.top], { config: [`trusted-public-keys = ${key.publicKey}`] })
  await nixOk(['store', 'verify', '--recursive', '--store', store, closure.top], { config: [`trusted-public-keys = ${key.publicKey}`] })

  // The push token at both, then revoked with the CLI: refused at both at once.
  const put = async (server: ServerProcess): Promise<number> => {
    const response = await fetch(`${server.url}/log/${top}-replica-test.drv`, { method: 'PUT', body: 'log', headers: { authorization: `Bearer ${token}` } })
    await response.arrayBuffer()
    return response.status
  }
  assert.deepEqual([await put(a), await put(b)].map(status => status < 300), [true, true], 'the CLI\'s token is accepted at both replicas')
  const id = (await cli(['token', 'list'])).split('\n').find(line => line.includes('ci'))?.trim().split(/\s+/)[0] ?? ''
  await cli(['token', 'revoke', id])
  assert.deepEqual([await put(a), await put(b)], [401, 401], 'revoked: refused at both at once')

  // gc at one replica's data: both answer 404 for what it removed.
  // The whole closure is recent, so keep-recent 0s: gc may take what was just pushed.
  const report = await cli(['gc', '--max-size', '0', '--keep-recent', '0s'])
  const goneAt = Date.now()
  while (await narinfoAt(a, top) !== 404 || await narinfoAt(b, top) !== 404) {
    assert.ok(Date.now() - goneAt < 1000, `after gc both replicas answer 404 within a second; gc said:\n${report}`)
    await new Promise(resolve => setTimeout(resolve, 20))
  }
})
