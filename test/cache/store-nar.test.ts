/**
 * A NAR upload becomes visible in one write transaction: its row is inserted and its file renamed
 * into place while the write lock is held, so garbage collection (which deletes a row and unlinks
 * its file in one write transaction) can never see one without the other. A NAR that decompresses
 * past its limit is refused while it streams.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes, randomInt } from 'node:crypto'
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { Readable } from 'node:stream'
import { loadConfig } from '../../src/config/config.js'
import { openCache } from '../../src/cache/open-cache.js'
import { storeNar } from '../../src/cache/store-nar.js'
import type { TempFile } from '../../src/storage/blob-store.js'
import { encodeNix32 } from '../../src/nix/nix32.js'
import { dumpPath } from '../../src/pusher/nar-writer.js'
import { compressBytes, fileHashOf, runBytes, sha256 } from '../helpers/upload.js'
import { tempDir } from '../helpers/nix.js'

test('the NAR file is renamed into place inside the transaction that records its row', async () => {
  const cache = openCache(loadConfig({ dataDir: tempDir('narwhal-store-nar-') }, {}))
  const nar = await runBytes('nix-store', ['--dump', '/bin'])
  const fileHash = fileHashOf(nar)
  const seen: Array<{ inTransaction: boolean, rowVisible: boolean, synchronous: unknown }> = []
  const commit = cache.blobs.commitNar.bind(cache.blobs)
  cache.blobs.commitNar = (temp: TempFile, hash: string): void => {
    seen.push({
      inTransaction: cache.db.inTransaction,
      rowVisible: cache.metadata.narFile(hash) !== undefined,
      synchronous: cache.db.pragma('synchronous', { simple: true })
    })
    commit(temp, hash)
  }
  const stored = await storeNar(Readable.from([nar]), fileHash, cache, { maxBytes: nar.length, maxNarSize: nar.length, declaredBytes: 0, reserveBytes: 0 })
  // synchronous 1 (NORMAL): the row reaches the disk with the next commit that waits for the
  // disk, its narinfo's.
  assert.deepEqual(seen, [{ inTransaction: true, rowVisible: true, synchronous: 1 }])
  assert.equal(stored.fileHash, fileHash)
  assert.equal(cache.db.inTransaction, false)
  // And every other commit (a narinfo's above all) waits for the disk again: 2 is FULL.
  assert.equal(cache.db.pragma('synchronous', { simple: true }), 2)
  assert.ok(existsSync(cache.blobs.narPath(fileHash)))
  assert.deepEqual(readdirSync(cache.layout.tmpDir), [], 'no temp file is left')
  cache.db.close()
})

test('when the rename fails the row is rolled back and the temp file removed', async () => {
  const cache = openCache(loadConfig({ dataDir: tempDir('narwhal-store-nar-') }, {}))
  const nar = await runBytes('nix-store', ['--dump', '/bin'])
  const fileHash = fileHashOf(nar)
  cache.blobs.commitNar = (): void => { throw Object.assign(new Error('simulated rename failure'), { code: 'EIO' }) }
  await assert.rejects(storeNar(Readable.from([nar]), fileHash, cache, { maxBytes: nar.length, maxNarSize: nar.length, declaredBytes: 0, reserveBytes: 0 }),
    /simulated rename failure/)
  assert.equal(cache.metadata.narFile(fileHash), undefined)
  assert.equal(cache.db.pragma('synchronous', { simple: true }), 2, 'FULL again after a failed commit')
  assert.deepEqual(readdirSync(cache.layout.tmpDir), [])
  cache.db.close()
})

test('a NAR of several MiB in uneven chunks is stored byte for byte (batched temp-file writes), zstd and uncompressed', async () => {
  const cache = openCache(loadConfig({ dataDir: tempDir('narwhal-store-nar-') }, {}))
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
    assert.ok(readFileSync(cache.blobs.narPath(fileHash)).equals(body), `${method}: the stored file is the body`)
  }
  assert.deepEqual(readdirSync(cache.layout.tmpDir), [])
  cache.db.close()
})

test('a NAR that decompresses past maxNarSize is refused as the limit is passed, not after the whole body', async () => {
  const cache = openCache(loadConfig({ dataDir: tempDir('narwhal-store-nar-') }, {}))
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
    assert.equal(cache.metadata.narFile(fileHashOf(body)), undefined)
  }
  assert.deepEqual(readdirSync(cache.layout.tmpDir), [], 'no temp file is left')
  cache.db.close()
})
