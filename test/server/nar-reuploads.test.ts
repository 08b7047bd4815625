/**
 * Rule (fact sheet §13.4): re-uploading a NAR the cache holds succeeds (Nix re-sends on --repair
 * and when its narinfo cache is stale) and stores nothing new; different bytes under a stored
 * name are refused and leave the stored file as it was; a NAR whose file was lost from disk is
 * restored by uploading it again; a re-upload restarts gc's grace period for unnamed NARs.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { statSync } from 'node:fs'
import { collectGarbage } from '../../src/cache/gc.js'
import { generateKeyPair } from '../../src/signing/keys.js'
import { BACKEND } from '../helpers/backend.js'
import { startServer } from '../helpers/server.js'
import { freshNar, get, makeNarinfo, put, rowCounts, ruleOf, sleep } from '../helpers/upload.js'
import { narFilePath } from '../../src/storage/layout.js'

const DAY = 86_400_000

test('the same NAR again: 200 unchanged, still one file, the file untouched', async (t) => {
  const server = await startServer(t)
  const token = await server.token('push')
  const nar = await freshNar('xz')
  assert.equal((await put(`${server.url}/${nar.url}`, nar.bytes, token)).status, 201)
  const stored = await server.storedFiles()
  assert.equal(stored.length, 1)
  const file = narFilePath(server.cache.layout, nar.fileHash)
  const mtime = BACKEND === 'sqlite-folder' ? statSync(file).mtimeMs : undefined
  const again = await put(`${server.url}/${nar.url}`, nar.bytes, token)
  assert.equal(again.status, 200)
  assert.equal(again.body, 'unchanged\n')
  assert.deepEqual(await server.storedFiles(), stored)
  // The folder's file is not even rewritten (a bucket's object: unchanged in the listing above).
  if (mtime !== undefined) assert.equal(statSync(file).mtimeMs, mtime)
  assert.equal((await rowCounts(server)).narFiles, 1)
})

test('different bytes under the name of a stored NAR: 400, and the stored file stays as it was', async (t) => {
  const server = await startServer(t)
  const token = await server.token('push')
  const nar = await freshNar('xz')
  const other = await freshNar('xz')
  assert.equal((await put(`${server.url}/${nar.url}`, nar.bytes, token)).status, 201)
  const stored = await server.storedFiles()
  const answer = await put(`${server.url}/${nar.url}`, other.bytes, token)
  assert.equal(answer.status, 400)
  assert.equal(ruleOf(answer), 'NARWHAL_NAR_INVALID')
  assert.match(answer.body, new RegExp(`hash to sha256:${other.fileHash}, not to the sha256:${nar.fileHash}`))
  assert.deepEqual(await server.storedFiles(), stored)
  assert.equal(stored.length, 1)
  const served = await get(`${server.url}/${nar.url}`)
  assert.ok(served.bytes.equals(nar.bytes), 'the stored NAR is still the first upload')
  assert.equal((await rowCounts(server)).narFiles, 1)
})

test('a NAR lost from its storage is restored by uploading it again', async (t) => {
  const server = await startServer(t)
  const token = await server.token('push')
  const nar = await freshNar('zstd')
  assert.equal((await put(`${server.url}/${nar.url}`, nar.bytes, token)).status, 201)
  await server.cache.blobs.delete({ fileHash: nar.fileHash, compression: 'zstd' })
  assert.equal((await get(`${server.url}/${nar.url}`)).status, 404)
  const again = await put(`${server.url}/${nar.url}`, nar.bytes, token)
  assert.equal(again.status, 201, again.body)
  const served = await get(`${server.url}/${nar.url}`)
  assert.equal(served.status, 200)
  assert.ok(served.bytes.equals(nar.bytes))
  assert.equal((await rowCounts(server)).narFiles, 1)
})

test('a NAR uploaded without its narinfo, uploaded again a grace period later: gc keeps it for the narinfo that follows', async (t) => {
  const uploader = generateKeyPair('test-uploader-1')
  const server = await startServer(t, { trustedKeys: [uploader.publicKeyText] })
  const token = await server.token('push')
  const nar = await freshNar('zstd')
  const abandoned = await freshNar('zstd')
  for (const n of [nar, abandoned]) assert.equal((await put(`${server.url}/${n.url}`, n.bytes, token)).status, 201)
  // Both pushes stopped after the NAR. The retried push: the NAR again, a collection judged a
  // day (gc's grace for unnamed NARs) after the retry began, then the narinfo. Only an upload
  // that restarts the grace period keeps the NAR.
  await sleep(20)
  const retriedAt = Date.now()
  const again = await put(`${server.url}/${nar.url}`, nar.bytes, token)
  assert.equal(again.status, 200, again.body)
  const report = await collectGarbage(server.cache, { maxSize: null, olderThan: null, keepRecent: 0, unnamedNarGrace: DAY, trigger: 'cli', now: retriedAt + DAY })
  assert.deepEqual(report.unnamedNarFiles.map(f => f.fileHash), [abandoned.fileHash], 'only the NAR not uploaded again goes')
  const narinfo = await put(`${server.url}/${nar.hashPart}.narinfo`, makeNarinfo(nar, { keys: [uploader.secretKey] }), token,
    { 'content-type': 'text/x-nix-narinfo' })
  assert.equal(narinfo.status, 201, narinfo.body)
  const served = await get(`${server.url}/${nar.url}`)
  assert.equal(served.status, 200)
  assert.ok(served.bytes.equals(nar.bytes))
  assert.equal((await get(`${server.url}/${abandoned.url}`)).status, 404)
})
