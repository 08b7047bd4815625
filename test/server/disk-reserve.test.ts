/**
 * Rule: a NAR upload that would leave less free disk than limits.freeSpaceReserveBytes is refused
 * with 507 before anything is written, and the cache keeps serving reads.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { generateKeyPair } from '../../src/signing/keys.js'
import { sqliteOnly } from '../helpers/backend.js'
import { startServer } from '../helpers/server.js'
import { freshNar, get, makeNarinfo, put, upload } from '../helpers/upload.js'

function configWithReserve (bytes: number): string {
  const file = path.join(mkdtempSync(path.join(os.tmpdir(), 'narwhal-reserve-')), 'narwhal.json')
  writeFileSync(file, JSON.stringify({ limits: { freeSpaceReserveBytes: bytes } }))
  return file
}

test('an upload that would eat into the free-space reserve gets 507 and stores nothing; reads go on', sqliteOnly('the free-space reserve is of the data folder\'s disk'), async (t) => {
  const uploader = generateKeyPair('test-uploader-1')
  // No disk here has 8 PiB free, so every upload is short of this reserve.
  const server = await startServer(t, { trustedKeys: [uploader.publicKeyText], env: { NARWHAL_CONFIG: configWithReserve(Number.MAX_SAFE_INTEGER) } })
  const token = await server.token('push')
  const nar = await freshNar('zstd')
  const answer = await put(`${server.url}/${nar.url}`, nar.bytes, token)
  assert.equal(answer.status, 507, answer.body)
  assert.match(answer.body, /^NARWHAL_INSUFFICIENT_STORAGE: the cache's disk has \d+ bytes free; .*\(limits\.freeSpaceReserveBytes\)\n$/)
  assert.deepEqual(await server.storedFiles(), [])
  assert.equal((await server.cache.metadata.narFiles.get(nar.fileHash)), undefined)
  assert.equal((await get(`${server.url}/nix-cache-info`)).status, 200)
  assert.equal((await get(`${server.url}/${nar.hashPart}.narinfo`)).status, 404)
})

test('with a reserve of 0 the check is off and uploads are stored', async (t) => {
  const uploader = generateKeyPair('test-uploader-1')
  const server = await startServer(t, { trustedKeys: [uploader.publicKeyText], env: { NARWHAL_CONFIG: configWithReserve(0) } })
  const nar = await freshNar('zstd')
  const result = await upload(server, nar, makeNarinfo(nar, { keys: [uploader.secretKey] }), (await server.token('push')))
  assert.equal(result.nar.status, 201, result.nar.body)
  assert.equal(result.narinfo.status, 201, result.narinfo.body)
})
