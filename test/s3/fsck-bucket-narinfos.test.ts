/**
 * `narwhal fsck --storage s3://…` compares the bucket's `<hash>.narinfo` objects (the bucket is a
 * Nix cache of its own) with the narinfo rows: an object deleted, one altered and one no row names
 * are reported by kind, --repair republishes the first two from their rows and removes the third,
 * and stock Nix then substitutes every pushed closure straight from the bucket's HTTP endpoint,
 * which it could not before the repair. Against a database that is not the bucket's (no schema;
 * migrated but empty), fsck does not call the bucket clean.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import path from 'node:path'
import { DeleteObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3'
import pg from 'pg'
import { encodeNix32 } from '../../src/nix/nix32.js'
import { buildClosure, netrcFile, nixKeyPair, nixOk, run, tempDir, type TestClosure } from '../helpers/nix.js'
import { createDatabase, postgresEngine } from '../helpers/postgres.js'
import { awsEnv, createBucket, listBucket, makePublicRead, s3Client, s3Engine, storageUrl } from '../helpers/s3.js'
import { CLI, createToken, spawnServer, type ServerProcess } from '../helpers/server-process.js'
import { get } from '../helpers/upload.js'

const engine = s3Engine()

function hashPart (storePath: string): string {
  return path.basename(storePath).slice(0, 32)
}

/** A server keeping its NARs in a fresh bucket (its rows in its SQLite file), and a push token for it. */
async function serverOnBucket (): Promise<{ key: Awaited<ReturnType<typeof nixKeyPair>>, bucket: string, storage: string, env: Record<string, string>, dataDir: string, server: ServerProcess, token: string }> {
  const key = await nixKeyPair('fsck-bucket-1')
  const bucket = await createBucket(engine)
  const storage = storageUrl(engine, bucket)
  const env = Object.fromEntries(Object.entries(awsEnv(engine)).filter(([k]) => k.startsWith('AWS_'))) as Record<string, string>
  const dataDir = tempDir('narwhal-data-')
  const server = await spawnServer({ dataDir, logFile: path.join(dataDir, 'serve.log'), trustedKeys: [key.publicKey], args: ['--storage', storage], env })
  return { key, bucket, storage, env, dataDir, server, token: await createToken(dataDir, 'push') }
}

test('fsck finds narinfo objects missing, different and unrecorded in the bucket; --repair fixes them and Nix substitutes from the bucket', { timeout: 5 * 60_000 }, async (t) => {
  const { key, bucket, storage, env, dataDir, server, token } = await serverOnBucket()
  t.after(async () => { await server.stop() })
  const closures: TestClosure[] = [await buildClosure(), await buildClosure()]
  for (const closure of closures) {
    await nixOk(['copy', '--to', `${server.url}?secret-key=${key.secretFile}`, closure.top], { config: [`netrc-file = ${netrcFile(token)}`] })
  }
  const fsck = async (...args: string[]): Promise<{ code: number | null, out: string }> => {
    const result = await run('node', [CLI, 'fsck', '--data', dataDir, '--storage', storage, ...args], { env: { ...process.env, ...env } })
    return { code: result.code, out: result.stdout + result.stderr }
  }
  const clean = await fsck()
  assert.equal(clean.code, 0, clean.out)
  assert.match(clean.out, /against 6 narinfo objects in the bucket: clean/)

  // The damage: closure 0's data narinfo deleted, its dep's altered (unsigned: Nix refuses it),
  // and a narinfo of a path the cache never held.
  const [first] = closures as [TestClosure]
  const missing = `${hashPart(first.data)}.narinfo`
  const altered = `${hashPart(first.dep)}.narinfo`
  const alteredBefore = (await get(`${server.url}/${altered}`)).body
  const ghostHash = encodeNix32(randomBytes(20))
  const ghost = `${ghostHash}.narinfo`
  const client = s3Client(engine)
  try {
    await client.send(new DeleteObjectCommand({ Bucket: bucket, Key: missing }))
    await client.send(new PutObjectCommand({ Bucket: bucket, Key: altered, Body: alteredBefore.replace(/^Sig: .*\n/gm, ''), ContentType: 'text/x-nix-narinfo' }))
    await client.send(new PutObjectCommand({
      Bucket: bucket,
      Key: ghost,
      Body: `StorePath: /nix/store/${ghostHash}-gone\nURL: nar/${encodeNix32(randomBytes(32))}.nar\nCompression: none\n` +
        `NarHash: sha256:${encodeNix32(randomBytes(32))}\nNarSize: 120\nReferences: \n`,
      ContentType: 'text/x-nix-narinfo'
    }))
  } finally { client.destroy() }
  await makePublicRead(engine, bucket)
  const fromBucket = async (closure: TestClosure): Promise<void> => {
    const store = tempDir('narwhal-store-')
    const trust = [`trusted-public-keys = ${key.publicKey}`]
    await nixOk(['copy', '--from', `${engine.endpoint}/${bucket}`, '--to', store, closure.top], { config: trust })
    await nixOk(['store', 'verify', '--recursive', '--store', store, closure.top], { config: trust })
  }
  await assert.rejects(fromBucket(first), 'the damaged bucket cannot give the first closure')

  const found = await fsck()
  assert.equal(found.code, 1, found.out)
  assert.match(found.out, new RegExp(`^narinfo-object-missing ${first.data}: s3://${bucket}/${missing} is missing`, 'm'))
  assert.match(found.out, new RegExp(`^narinfo-object-different ${first.dep}: s3://${bucket}/${altered} is not the narinfo`, 'm'))
  assert.match(found.out, new RegExp(`^unrecorded-narinfo-object s3://${bucket}/${ghost}: no narinfo row for /nix/store/${ghostHash}-gone`, 'm'))
  assert.equal(found.out.split('\n').filter(line => /^[a-z-]+ \S+: /.test(line)).length, 3, found.out)
  assert.match(found.out, new RegExp(`^would republish the narinfo of ${first.data}$`, 'm'))
  const untouched = await listBucket(engine, bucket)
  assert.equal(untouched.has(missing), false, 'without --repair nothing is changed')
  assert.equal(untouched.has(ghost), true, 'without --repair nothing is changed')

  const repaired = await fsck('--repair')
  assert.equal(repaired.code, 1, repaired.out)
  assert.match(repaired.out, new RegExp(`^republished the narinfo of ${first.data}$`, 'm'))
  assert.match(repaired.out, new RegExp(`^republished the narinfo of ${first.dep}$`, 'm'))
  assert.match(repaired.out, new RegExp(`^deleted s3://${bucket}/${ghost}$`, 'm'))
  assert.match(repaired.out, /removed 0 store paths/, 'no path was removed for a narinfo object')
  const after = await fsck()
  assert.equal(after.code, 0, after.out)
  assert.equal((await listBucket(engine, bucket)).has(ghost), false)

  for (const closure of closures) await fromBucket(closure)
})

test('fsck against a database with no narwhal schema fails (run narwhal migrate) and creates none; against a migrated but empty one, every NAR and narinfo object in the bucket is unrecorded', { timeout: 5 * 60_000 }, async (t) => {
  // The bucket is filled by a server whose rows are in its SQLite file; the database fsck is then given holds none of them.
  const { key, bucket, storage, env, server, token } = await serverOnBucket()
  const closure = await buildClosure()
  await nixOk(['copy', '--to', `${server.url}?secret-key=${key.secretFile}`, closure.top], { config: [`netrc-file = ${netrcFile(token)}`] })
  await server.stop()
  const objects = [...(await listBucket(engine, bucket)).keys()]
  const narinfoObjects = objects.filter(k => k.endsWith('.narinfo'))
  const narObjects = objects.filter(k => k.startsWith('nar/'))
  assert.deepEqual([narinfoObjects.length, narObjects.length], [3, 3], objects.join('\n'))

  const db = await createDatabase(postgresEngine())
  t.after(db.drop)
  const fsck = async (...args: string[]): Promise<{ code: number | null, out: string }> => {
    const result = await run('node', [CLI, 'fsck', '--data', tempDir('narwhal-fsck-'), '--database', db.url, '--storage', storage, ...args], { env: { ...process.env, ...env } })
    return { code: result.code, out: result.stdout + result.stderr }
  }
  const unmigrated = await fsck('--grace', '0')
  assert.equal(unmigrated.code, 2, unmigrated.out)
  assert.match(unmigrated.out, /no narwhal schema \(not migrated\): run `narwhal migrate --database …`/)
  const schema = new pg.Client({ connectionString: db.url })
  await schema.connect()
  try {
    assert.equal((await schema.query("SELECT to_regclass('narwhal_schema')::text AS found")).rows[0]?.found, null, 'fsck created no schema')
  } finally { await schema.end() }

  assert.equal((await run('node', [CLI, 'migrate', '--database', db.url])).code, 0)
  const empty = await fsck('--grace', '0')
  assert.equal(empty.code, 1, empty.out)
  for (const key of narinfoObjects) assert.match(empty.out, new RegExp(`^unrecorded-narinfo-object s3://${bucket}/${key}: no narinfo row for /nix/store/`, 'm'))
  for (const key of narObjects) assert.match(empty.out, new RegExp(`^unrecorded-nar-file s3://${bucket}/${key}: `, 'm'))
  assert.doesNotMatch(empty.out, /clean/)
  // Within the grace period the NAR objects may be uploads in flight, but the narinfo objects are not.
  const young = await fsck()
  assert.equal(young.code, 1, young.out)
  assert.equal(young.out.split('\n').filter(line => line.startsWith('unrecorded-narinfo-object ')).length, 3, young.out)
})
