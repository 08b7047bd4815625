/**
 * An upload's temp file goes to the disk while the upload is still arriving (temp-file.ts
 * TempFile.startEarlySync), so the fsync before the answer has only the tail left to write; and
 * a sync still under way never outlives the file's descriptor.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync, readFileSync } from 'node:fs'
import { createHash } from 'node:crypto'
import { loadConfig } from '../../src/config/config.js'
import { openCache } from '../../src/cache/open-cache.js'
import { FileBlobStore } from '../../src/storage/file-blob-store.js'
import type { TempFile } from '../../src/storage/temp-file.js'
import { sqliteOnly, cacheConfig } from '../helpers/backend.js'
import { tempDir } from '../helpers/nix.js'

const MIB = 1024 * 1024

/** Appends `mib` MiB in 64 KiB chunks, each distinct, the way a socket delivers a body. */
async function appendMiB (temp: TempFile, mib: number): Promise<Buffer> {
  const hash = createHash('sha256')
  for (let i = 0; i < mib * 16; i++) {
    const chunk = Buffer.alloc(64 * 1024, i & 0xff)
    hash.update(chunk)
    const writing = temp.append(chunk)
    if (writing !== undefined) await writing
  }
  return hash.digest()
}

async function waitFor (condition: () => boolean, ms: number): Promise<boolean> {
  const until = Date.now() + ms
  while (!condition()) {
    if (Date.now() > until) return false
    await new Promise(resolve => setTimeout(resolve, 10))
  }
  return true
}

test('a large upload is synced while it arrives, and wholly once sync() returns', sqliteOnly('fsync of the folder\'s temp files'), async () => {
  const cache = await openCache(loadConfig(await cacheConfig({ dataDir: tempDir('narwhal-temp-sync-') }), {}))
  try {
    const temp = await new FileBlobStore(cache.layout).begin()
    const digest = await appendMiB(temp, 40)
    // No sync() yet: only the early syncs started by the writes themselves can have done this.
    assert.ok(await waitFor(() => temp.bytesSynced >= 16 * MIB, 10_000),
      `expected at least 16 MiB on the disk before sync(), got ${temp.bytesSynced}`)
    await temp.sync()
    assert.equal(temp.bytesSynced, 40 * MIB)
    assert.deepEqual(createHash('sha256').update(readFileSync(temp.path)).digest(), digest)
    await temp.discard()
    assert.equal(existsSync(temp.path), false)
  } finally {
    await cache.close()
  }
})

test('a small upload is left to the final sync', sqliteOnly('fsync of the folder\'s temp files'), async () => {
  const cache = await openCache(loadConfig(await cacheConfig({ dataDir: tempDir('narwhal-temp-sync-') }), {}))
  try {
    const temp = await new FileBlobStore(cache.layout).begin()
    await appendMiB(temp, 4)
    await new Promise(resolve => setTimeout(resolve, 200))
    assert.equal(temp.bytesSynced, 0)
    await temp.sync()
    assert.equal(temp.bytesSynced, 4 * MIB)
    await temp.discard()
  } finally {
    await cache.close()
  }
})

test('discarding an upload while an early sync runs closes and removes it cleanly', sqliteOnly('fsync of the folder\'s temp files'), async () => {
  const cache = await openCache(loadConfig(await cacheConfig({ dataDir: tempDir('narwhal-temp-sync-') }), {}))
  try {
    for (let i = 0; i < 3; i++) {
      const temp = await new FileBlobStore(cache.layout).begin()
      await appendMiB(temp, 20)
      await temp.discard()
      assert.equal(existsSync(temp.path), false)
      // Closed: appending again must not write to a descriptor that may now be another file's.
      await assert.rejects(async () => { await appendMiB(temp, 2) })
    }
  } finally {
    await cache.close()
  }
})
