/**
 * Rule: a disk that fills up during an upload leaves nothing behind: the answer is 507, the temp
 * file is gone, and the cache keeps serving what it had. The data folder is a 6 MiB tmpfs
 * (mounting one needs root, which the suite runs as).
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { mkdirSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { generateKeyPair } from '../../src/signing/keys.js'
import { sqliteOnly } from '../helpers/backend.js'
import { tempDir } from '../helpers/nix.js'
import { startServer } from '../helpers/server.js'
import { freshNar, get, makeNarinfo, put, upload } from '../helpers/upload.js'

test('a disk that fills mid-upload: 507, nothing left behind, reads go on', sqliteOnly('fills the data folder\'s disk; a bucket has no disk to fill'), async (t) => {
  const mountPoint = tempDir('narwhal-tmpfs-')
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=6m', 'tmpfs', mountPoint])
  t.after(() => { execFileSync('umount', ['-l', mountPoint]) })
  const dataDir = path.join(mountPoint, 'data')
  mkdirSync(dataDir)
  const config = path.join(tempDir('narwhal-config-'), 'narwhal.json')
  // The reserve check is off, so the upload starts and meets the full disk while streaming.
  writeFileSync(config, JSON.stringify({ limits: { freeSpaceReserveBytes: 0 } }))
  const uploader = generateKeyPair('test-uploader-1')
  const server = await startServer(t, { trustedKeys: [uploader.publicKeyText], dataDir, env: { NARWHAL_CONFIG: config } })
  const token = await server.token('push')

  const small = await freshNar('zstd')
  const stored = await upload(server, small, makeNarinfo(small, { keys: [uploader.secretKey] }), token)
  assert.equal(stored.narinfo.status, 201, stored.narinfo.body)
  const before = await server.storedFiles()

  // Random bytes do not compress: an 8 MiB NAR cannot fit on the 6 MiB disk.
  const big = await freshNar('none', { randomBytes: 8 * 1024 * 1024 })
  const answer = await put(`${server.url}/${big.url}`, big.bytes, token)
  assert.equal(answer.status, 507, answer.body)
  assert.match(answer.body, /^NARWHAL_INSUFFICIENT_STORAGE: the cache's disk filled up during the upload; nothing was stored\n$/)
  assert.deepEqual(await server.storedFiles(), before, 'the partial temp file is removed')
  assert.equal((await server.cache.metadata.narFiles.get(big.fileHash)), undefined)

  const served = await get(`${server.url}/${small.hashPart}.narinfo`)
  assert.equal(served.status, 200)
  assert.equal((await get(`${server.url}/${small.url}`)).status, 200)
})
