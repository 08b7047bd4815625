/**
 * Several machines as an operator runs them: two `narwhal serve` replicas on two ports, each with
 * a data folder of its own (nothing shared on disk), sharing one PostgreSQL database and one S3
 * bucket (Ceph's RADOS Gateway). A closure pushed with `nix copy` through one is substituted into
 * an empty store through the other, streamed and through redirects to presigned URLs; a narinfo
 * accepted at one is served by the other within a second; a token made with the CLI works at both
 * and, revoked, is refused at both at once; gc run by the CLI empties the bucket and both answer
 * 404; fsck finds both sides clean.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { buildClosure, netrcFile, nixKeyPair, nixOk, run, tempDir } from '../helpers/nix.js'
import { hashPart, sharedCache, spawnReplica, statusOf } from '../helpers/replicas.js'
import { listBucket, unfinishedUploads } from '../helpers/s3.js'
import { CLI, type ServerProcess } from '../helpers/server-process.js'

test('two replicas on PostgreSQL and S3, no shared folder: push through one, substitute through the other; tokens, gc and fsck count at both', { timeout: 5 * 60_000 }, async (t) => {
  const { engine, bucket, env } = await sharedCache(t)
  const key = await nixKeyPair('replica-test-1')
  const a = await spawnReplica(t, 'a', [key.publicKey], { ...env, NARWHAL_STORAGE_REDIRECT_NARS: 'false' })
  const b = await spawnReplica(t, 'b', [key.publicKey], { ...env, NARWHAL_STORAGE_REDIRECT_NARS: 'true' })

  // The CLI runs on a third machine's folder: everything it changes is in the database and the bucket.
  const cliData = tempDir('narwhal-replica-cli-')
  const cli = async (args: string[]): Promise<{ code: number | null, out: string, err: string }> => {
    const result = await run('node', [CLI, ...args, '--data', cliData], { env: { ...process.env, ...env } })
    return { code: result.code, out: result.stdout.trim(), err: result.stderr.trim() }
  }
  const created = await cli(['token', 'create', '--scope', 'push', '--name', 'ci'])
  assert.equal(created.code, 0, created.err)
  const token = created.out
  const closure = await buildClosure({ dataBytes: 12 * 1024 * 1024 })
  const top = hashPart(closure.top)
  assert.equal(await statusOf(`${b.url}/${top}.narinfo`), 404, 'b has not got it yet')

  await nixOk(['copy', '--to', `${a.url}?secret-key=${key.secretFile}`, closure.top], { config: [`netrc-file = ${netrcFile(token)}`] })
  const pushedAt = Date.now()
  while (await statusOf(`${b.url}/${top}.narinfo`) !== 200) {
    assert.ok(Date.now() - pushedAt < 1000, 'a narinfo accepted at a is served by b within a second')
    await new Promise(resolve => setTimeout(resolve, 20))
  }

  // Substituted through each replica into an empty store: a streams NARs, b redirects to the bucket.
  const trust = [`trusted-public-keys = ${key.publicKey}`]
  for (const server of [a, b]) {
    const store = tempDir('narwhal-replica-store-')
    await nixOk(['copy', '--from', server.url, '--to', store, closure.top], { config: trust })
    await nixOk(['store', 'verify', '--recursive', '--store', store, closure.top], { config: trust })
  }
  const objects = [...(await listBucket(engine, bucket)).keys()]
  for (const storePath of closure.all) assert.ok(objects.includes(`${hashPart(storePath)}.narinfo`), objects.join(' '))
  const fsck = await cli(['fsck', '--verify-content'])
  assert.equal(fsck.code, 0, fsck.out + fsck.err)

  // The CLI's token at both, then revoked with the CLI: refused at both at once.
  const put = async (server: ServerProcess): Promise<number> =>
    await statusOf(`${server.url}/log/${top}-replica-test.drv`, { method: 'PUT', body: 'log', headers: { authorization: `Bearer ${token}` } })
  assert.deepEqual([await put(a), await put(b)].map(status => status < 300), [true, true], 'the CLI\'s token is accepted at both replicas')
  const listed = await cli(['token', 'list'])
  const id = listed.out.split('\n').find(line => line.includes('ci'))?.trim().split(/\s+/)[0] ?? ''
  assert.equal((await cli(['token', 'revoke', id])).code, 0)
  assert.deepEqual([await put(a), await put(b)], [401, 401], 'revoked: refused at both at once')

  // gc by the CLI: the bucket keeps only nix-cache-info, and both replicas answer 404.
  const gc = await cli(['gc', '--max-size', '0', '--keep-recent', '0s'])
  assert.equal(gc.code, 0, gc.out + gc.err)
  const goneAt = Date.now()
  while (await statusOf(`${a.url}/${top}.narinfo`) !== 404 || await statusOf(`${b.url}/${top}.narinfo`) !== 404) {
    assert.ok(Date.now() - goneAt < 1000, `after gc both replicas answer 404 within a second; gc said:\n${gc.out}`)
    await new Promise(resolve => setTimeout(resolve, 20))
  }
  assert.deepEqual([...(await listBucket(engine, bucket)).keys()], ['nix-cache-info'])
})

test('a replica killed with kill -9 in the middle of a large upload leaves nothing visible; the other takes the whole closure and fsck finds both sides clean', { timeout: 5 * 60_000 }, async (t) => {
  const { engine, bucket, env } = await sharedCache(t)
  const key = await nixKeyPair('replica-test-1')
  const a = await spawnReplica(t, 'a', [key.publicKey], env)
  const b = await spawnReplica(t, 'b', [key.publicKey], env)
  const cliData = tempDir('narwhal-replica-cli-')
  const cli = async (args: string[]): Promise<{ code: number | null, out: string }> => {
    const result = await run('node', [CLI, ...args, '--data', cliData], { env: { ...process.env, ...env } })
    return { code: result.code, out: result.stdout + result.stderr }
  }
  const token = (await cli(['token', 'create', '--scope', 'push', '--name', 'ci'])).out.split('\n').find(line => line.startsWith('nw_')) ?? ''
  const netrc = [`netrc-file = ${netrcFile(token)}`]
  // 40 MiB of random bytes: a NAR of five 8 MiB parts, sent as a multipart upload.
  const closure = await buildClosure({ dataBytes: 40 * 1024 * 1024 })

  const copyToA = nixOk(['copy', '--to', `${a.url}?secret-key=${key.secretFile}&compression=none`, closure.top], { config: netrc })
    .then(() => 'finished', () => 'failed')
  const startedAt = Date.now()
  while ((await unfinishedUploads(engine, bucket)).length === 0) {
    assert.ok(Date.now() - startedAt < 60_000, 'the large NAR went up as a multipart upload')
    await new Promise(resolve => setTimeout(resolve, 50))
  }
  await a.kill()
  assert.equal(await copyToA, 'failed', 'the push through the killed replica failed')
  const data = hashPart(closure.data)
  assert.equal(await statusOf(`${b.url}/${data}.narinfo`), 404, 'nothing of the interrupted path is visible')
  assert.equal([...(await listBucket(engine, bucket)).keys()].some(k => k.startsWith(`${data}.`)), false)

  await nixOk(['copy', '--to', `${b.url}?secret-key=${key.secretFile}`, closure.top], { config: netrc })
  const store = tempDir('narwhal-replica-store-')
  const trust = [`trusted-public-keys = ${key.publicKey}`]
  await nixOk(['copy', '--from', b.url, '--to', store, closure.top], { config: trust })
  await nixOk(['store', 'verify', '--recursive', '--store', store, closure.top], { config: trust })
  const fsck = await cli(['fsck', '--verify-content'])
  assert.equal(fsck.code, 0, fsck.out)
})
