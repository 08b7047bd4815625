/**
 * Rule (fact sheet §13.4): re-uploading a NAR the cache holds succeeds (Nix re-sends on --repair
 * and when its narinfo cache is stale) and stores nothing new; different bytes under a stored
 * name are refused and leave the stored file as it was; a NAR whose file was lost from disk is
 * restored by uploading it again.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync, rmSync, statSync } from 'node:fs'
import { startServer } from '../helpers/server.js'
import { freshNar, get, put, rowCounts, ruleOf } from '../helpers/upload.js'

test('the same NAR again: 200 unchanged, still one file, the file untouched', async (t) => {
  const server = await startServer(t)
  const token = server.token('push')
  const nar = await freshNar('xz')
  assert.equal((await put(`${server.url}/${nar.url}`, nar.bytes, token)).status, 201)
  const file = server.cache.blobs.narPath(nar.fileHash)
  const mtime = statSync(file).mtimeMs
  const again = await put(`${server.url}/${nar.url}`, nar.bytes, token)
  assert.equal(again.status, 200)
  assert.equal(again.body, 'unchanged\n')
  assert.deepEqual(server.storedFiles(), [file])
  assert.equal(statSync(file).mtimeMs, mtime)
  assert.equal(rowCounts(server).narFiles, 1)
})

test('different bytes under the name of a stored NAR: 400, and the stored file stays as it was', async (t) => {
  const server = await startServer(t)
  const token = server.token('push')
  const nar = await freshNar('xz')
  const other = await freshNar('xz')
  assert.equal((await put(`${server.url}/${nar.url}`, nar.bytes, token)).status, 201)
  const answer = await put(`${server.url}/${nar.url}`, other.bytes, token)
  assert.equal(answer.status, 400)
  assert.equal(ruleOf(answer), 'NARWHAL_NAR_INVALID')
  assert.match(answer.body, new RegExp(`hash to sha256:${other.fileHash}, not to the sha256:${nar.fileHash}`))
  assert.deepEqual(server.storedFiles(), [server.cache.blobs.narPath(nar.fileHash)])
  assert.ok(readFileSync(server.cache.blobs.narPath(nar.fileHash)).equals(nar.bytes))
  assert.equal(rowCounts(server).narFiles, 1)
})

test('a NAR lost from disk is restored by uploading it again', async (t) => {
  const server = await startServer(t)
  const token = server.token('push')
  const nar = await freshNar('zstd')
  assert.equal((await put(`${server.url}/${nar.url}`, nar.bytes, token)).status, 201)
  rmSync(server.cache.blobs.narPath(nar.fileHash))
  assert.equal((await get(`${server.url}/${nar.url}`)).status, 404)
  const again = await put(`${server.url}/${nar.url}`, nar.bytes, token)
  assert.equal(again.status, 201, again.body)
  const served = await get(`${server.url}/${nar.url}`)
  assert.equal(served.status, 200)
  assert.ok(served.bytes.equals(nar.bytes))
  assert.equal(rowCounts(server).narFiles, 1)
})
