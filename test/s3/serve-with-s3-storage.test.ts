/**
 * `narwhal serve --storage s3://…` as an operator runs it (the CLI, credentials from the AWS
 * environment): `nix copy --to` pushes through it, the bucket it wrote is a Nix cache stock Nix
 * substitutes from with no narwhal in between (nix-cache-info, narinfos and NARs), and `narwhal
 * gc` takes the narinfos (before their NARs) and the NARs out of the bucket.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import path from 'node:path'
import { buildClosure, netrcFile, nixKeyPair, nixOk, run, tempDir } from '../helpers/nix.js'
import { CLI, createToken, spawnServer } from '../helpers/server-process.js'
import { awsEnv, createBucket, listBucket, makePublicRead, s3Engine, storageUrl, unfinishedUploads } from '../helpers/s3.js'

const engine = s3Engine()

test('narwhal serve --storage s3://…: pushed through narwhal, substituted by stock Nix straight from the bucket; gc takes its narinfos and NARs out', async (t) => {
  const key = await nixKeyPair('test-uploader-1')
  const bucket = await createBucket(engine)
  const url = storageUrl(engine, bucket)
  const dataDir = tempDir('narwhal-data-')
  const env = Object.fromEntries(Object.entries(awsEnv(engine)).filter(([k]) => k.startsWith('AWS_'))) as Record<string, string>
  const server = await spawnServer({ dataDir, logFile: path.join(dataDir, 'serve.log'), trustedKeys: [key.publicKey], args: ['--storage', url], env })
  t.after(async () => await server.stop())

  const closure = await buildClosure({ dataBytes: 1024 * 1024 })
  const token = await createToken(dataDir, 'push')
  await nixOk(['copy', '--to', `${server.url}?secret-key=${key.secretFile}`, closure.top], { config: [`netrc-file = ${netrcFile(token)}`] })
  const objects = await listBucket(engine, bucket)
  const keys = [...objects.keys()]
  assert.ok(keys.includes('nix-cache-info'), keys.join(' '))
  for (const storePath of closure.all) assert.ok(keys.includes(`${path.basename(storePath).slice(0, 32)}.narinfo`), `${storePath}: ${keys.join(' ')}`)
  assert.equal(keys.filter(k => k.startsWith('nar/')).length, 3)
  assert.deepEqual(await unfinishedUploads(engine, bucket), [])
  // The data folder holds no NAR: they are all in the bucket.
  assert.equal((await run('find', [path.join(dataDir, 'store'), '-type', 'f', '-path', '*/nar/*'])).stdout.trim(), '')

  await makePublicRead(engine, bucket)
  const target = tempDir('narwhal-store-')
  const trust = [`trusted-public-keys = ${key.publicKey}`]
  await nixOk(['copy', '--from', `${engine.endpoint}/${bucket}`, '--to', target, closure.top], { config: trust })
  await nixOk(['store', 'verify', '--recursive', '--store', target, closure.top], { config: trust })

  // Collected with no grace and no reads kept: the narinfos leave the bucket, then the NARs.
  await server.stop()
  const gc = await run('node', [CLI, 'gc', '--data', dataDir, '--storage', url, '--max-size', '0', '--keep-recent', '0s'], { env: { ...process.env, ...env } })
  assert.equal(gc.code, 0, gc.stdout + gc.stderr)
  const left = [...(await listBucket(engine, bucket)).keys()]
  assert.deepEqual(left, ['nix-cache-info'], left.join(' '))
})
