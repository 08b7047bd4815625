/**
 * A NAR upload is stored by the protocol of NAR file states (cache/store-nar.ts): claimed, its
 * file committed, then live. Only a live NAR is served or named; an upload that meets a removal
 * of the same NAR in progress waits for it and never has its file deleted under it. A NAR that
 * decompresses past its limit is refused while it streams.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes, randomInt } from 'node:crypto'
import { mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { Readable } from 'node:stream'
import { setTimeout as sleep } from 'node:timers/promises'
import { loadConfig } from '../../src/config/config.js'
import { openCache } from '../../src/cache/open-cache.js'
import { storeNar } from '../../src/cache/store-nar.js'
import type { IngestOptions } from '../../src/storage/nar-ingest.js'
import { encodeNix32 } from '../../src/nix/nix32.js'
import { dumpPath } from '../../src/pusher/nar-writer.js'
import { sqliteOnly, cacheConfig } from '../helpers/backend.js'
import { compressBytes, fileHashOf, runBytes, sha256 } from '../helpers/upload.js'
import { tempDir } from '../helpers/nix.js'
import { narFilePath } from '../../src/storage/layout.js'
import { holdsObject, readNar, removeNar, uploadLeftovers } from '../helpers/blobs.js'

const LIMITS = (n: number): IngestOptions => ({ maxBytes: n, maxNarSize: n, declaredBytes: 0, reserveBytes: 0 })

test('an upload meeting a removal of the same NAR waits for it, then stores the NAR whole', async () => {
  const cache = await openCache(loadConfig(await cacheConfig({ dataDir: tempDir('narwhal-store-nar-') }), {}))
  const nar = await runBytes('nix-store', ['--dump', '/bin'])
  const fileHash = fileHashOf(nar)
  await storeNar(Readable.from([nar]), fileHash, cache, LIMITS(nar.length))
  // A collection has marked the unnamed NAR 'deleting' (gc's first step) and is about to delete it.
  const [marked] = await cache.metadata.narFiles.markUnnamedDeleting(Date.now() + 1, 0)
  assert.equal(marked?.fileHash, fileHash)
  const upload = storeNar(Readable.from([nar]), fileHash, cache, LIMITS(nar.length))
  await sleep(300)
  // The collection's last steps, while the upload waits.
  await removeNar(cache.blobs, { fileHash, compression: 'none' })
  assert.equal(await cache.metadata.narFiles.forget(marked.id), true)
  await upload
  assert.equal((await cache.metadata.narFiles.get(fileHash))?.state, 'live')
  assert.deepEqual(await readNar(cache.blobs, { fileHash, compression: 'none' }), nar, 'the object the upload stored is there')
  assert.deepEqual(await uploadLeftovers(cache.layout.dataDir), [], 'no temp file is left')
  await cache.close()
})

test('an upload refused because a removal holds the NAR too long leaves the removal alone', async () => {
  const cache = await openCache(loadConfig(await cacheConfig({ dataDir: tempDir('narwhal-store-nar-') }), {}))
  const nar = await runBytes('nix-store', ['--dump', '/bin'])
  const fileHash = fileHashOf(nar)
  await storeNar(Readable.from([nar]), fileHash, cache, LIMITS(nar.length))
  await cache.metadata.narFiles.markUnnamedDeleting(Date.now() + 1, 0)
  await removeNar(cache.blobs, { fileHash, compression: 'none' })
  await assert.rejects(storeNar(Readable.from([nar]), fileHash, cache, LIMITS(nar.length)), { code: 'NARWHAL_BUSY' })
  assert.equal((await cache.metadata.narFiles.get(fileHash))?.state, 'deleting')
  assert.equal(await holdsObject(cache.blobs, { fileHash, compression: 'none' }), false, 'nothing was committed for the removal to miss')
  assert.deepEqual(await uploadLeftovers(cache.layout.dataDir), [])
  await cache.close()
})

test('when the commit fails the NAR is not live and the temp file is removed; a retry stores it', sqliteOnly('makes the commit fail with a file where the folder\'s shard directory belongs'), async () => {
  const cache = await openCache(loadConfig(await cacheConfig({ dataDir: tempDir('narwhal-store-nar-') }), {}))
  const nar = await runBytes('nix-store', ['--dump', '/bin'])
  const fileHash = fileHashOf(nar)
  // A file where the NAR's shard folder belongs: the rename into place fails for real (as root,
  // permissions would not stop it).
  const shard = path.dirname(narFilePath(cache.layout, fileHash))
  writeFileSync(shard, 'not a folder')
  await assert.rejects(storeNar(Readable.from([nar]), fileHash, cache, { maxBytes: nar.length, maxNarSize: nar.length, declaredBytes: 0, reserveBytes: 0 }),
    (err: NodeJS.ErrnoException) => err.code === 'EEXIST' || err.code === 'ENOTDIR')
  assert.notEqual((await cache.metadata.narFiles.get(fileHash))?.state, 'live')
  assert.deepEqual(readdirSync(cache.layout.tmpDir), [])
  // Nothing is left half-done: once the folder can be made, the same upload succeeds.
  rmSync(shard)
  await storeNar(Readable.from([nar]), fileHash, cache, { maxBytes: nar.length, maxNarSize: nar.length, declaredBytes: 0, reserveBytes: 0 })
  assert.equal((await cache.metadata.narFiles.get(fileHash))?.fileSize, nar.length)
  await cache.close()
})

test('a NAR of several MiB in uneven chunks is stored byte for byte (batched temp-file writes), zstd and uncompressed', async () => {
  const cache = await openCache(loadConfig(await cacheConfig({ dataDir: tempDir('narwhal-store-nar-') }), {}))
  const dir = tempDir('narwhal-store-nar-src-')
  // Random bytes do not compress: the zstd body is as large as the NAR, several write batches.
  writeFileSync(path.join(dir, 'random.bin'), randomBytes(3 * 1024 * 1024 + 12345))
  writeFileSync(path.join(dir, 'text.txt'), 'narwhal '.repeat(100_000))
  const parts: Buffer[] = []
  for await (const chunk of dumpPath(dir)) parts.push(chunk)
  const nar = Buffer.concat(parts)
  for (const method of ['zstd', 'none'] as const) {
    const body = await compressBytes(nar, method)
    const chunks: Buffer[] = []
    for (let i = 0, n = 0; i < body.length; i += n) {
      n = 1 + randomInt(70_000)
      chunks.push(body.subarray(i, i + n))
    }
    const fileHash = fileHashOf(body)
    const stored = await storeNar(Readable.from(chunks), fileHash, cache, { maxBytes: body.length, maxNarSize: nar.length, declaredBytes: body.length, reserveBytes: 0 })
    assert.deepEqual(stored, {
      fileHash,
      fileSize: body.length,
      compression: method,
      narHash: encodeNix32(sha256(nar)),
      narSize: nar.length
    })
    assert.deepEqual(await readNar(cache.blobs, { fileHash, compression: method }), body, `${method}: the stored object is the body`)
  }
  assert.deepEqual(await uploadLeftovers(cache.layout.dataDir), [])
  await cache.close()
})

test('a NAR that decompresses past maxNarSize is refused as the limit is passed, not after the whole body', async () => {
  const cache = await openCache(loadConfig(await cacheConfig({ dataDir: tempDir('narwhal-store-nar-') }), {}))
  const dir = path.join(tempDir('narwhal-store-nar-src-'), 'zeros')
  mkdirSync(dir)
  writeFileSync(path.join(dir, 'zeros'), Buffer.alloc(32 * 1024 * 1024))
  const parts: Buffer[] = []
  for await (const chunk of dumpPath(dir)) parts.push(chunk)
  const nar = Buffer.concat(parts)
  const limit = 1024 * 1024
  // zstd in 1-byte chunks (32 MiB of zeros compress to about a KiB: the NAR's start, then a few
  // bytes per 128 KiB of zeros), and the NAR itself in 64 KiB chunks. Both decoders are
  // synchronous, so the refusal comes with the chunk that passes the limit. (xz is decoded on
  // another thread and its output arrives later; the HTTP tests cover its refusal.)
  for (const [method, chunkSize] of [['zstd', 1], ['none', 64 * 1024]] as const) {
    const body = await compressBytes(nar, method)
    let pulled = 0
    async function * counted (): AsyncGenerator<Buffer> {
      for (let at = 0; at < body.length; at += chunkSize) {
        pulled += Math.min(chunkSize, body.length - at)
        yield body.subarray(at, at + chunkSize)
      }
    }
    await assert.rejects(storeNar(counted(), fileHashOf(body), cache, { maxBytes: body.length, maxNarSize: limit, declaredBytes: 0, reserveBytes: 0 }),
      { code: 'NARWHAL_TOO_LARGE', message: `NAR file decompresses to more than the limit of ${limit} bytes (limits.narSizeBytes)` })
    assert.ok(pulled < body.length / 4, `${method}: read ${pulled} of ${body.length} bytes before refusing`)
    assert.equal(await cache.metadata.narFiles.get(fileHashOf(body)), undefined)
  }
  assert.deepEqual(await uploadLeftovers(cache.layout.dataDir), [], 'no temp file is left')
  await cache.close()
})
