/**
 * A NAR upload becomes visible in one write transaction: its row is inserted and its file renamed
 * into place while the write lock is held, so garbage collection (which deletes a row and unlinks
 * its file in one write transaction) can never see one without the other.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync, readdirSync } from 'node:fs'
import { Readable } from 'node:stream'
import { loadConfig } from '../../src/config/config.js'
import { openCache } from '../../src/cache/open-cache.js'
import { storeNar } from '../../src/cache/store-nar.js'
import type { TempFile } from '../../src/storage/blob-store.js'
import { fileHashOf, runBytes } from '../helpers/upload.js'
import { tempDir } from '../helpers/nix.js'

test('the NAR file is renamed into place inside the transaction that records its row', async () => {
  const cache = openCache(loadConfig({ dataDir: tempDir('narwhal-store-nar-') }, {}))
  const nar = await runBytes('nix-store', ['--dump', '/bin'])
  const fileHash = fileHashOf(nar)
  const seen: Array<{ inTransaction: boolean, rowVisible: boolean }> = []
  const commit = cache.blobs.commitNar.bind(cache.blobs)
  cache.blobs.commitNar = (temp: TempFile, hash: string): void => {
    seen.push({ inTransaction: cache.db.inTransaction, rowVisible: cache.metadata.narFile(hash) !== undefined })
    commit(temp, hash)
  }
  const stored = await storeNar(Readable.from([nar]), fileHash, cache, { maxBytes: nar.length, declaredBytes: 0, reserveBytes: 0 })
  assert.deepEqual(seen, [{ inTransaction: true, rowVisible: true }])
  assert.equal(stored.fileHash, fileHash)
  assert.equal(cache.db.inTransaction, false)
  assert.ok(existsSync(cache.blobs.narPath(fileHash)))
  assert.deepEqual(readdirSync(cache.layout.tmpDir), [], 'no temp file is left')
  cache.db.close()
})

test('when the rename fails the row is rolled back and the temp file removed', async () => {
  const cache = openCache(loadConfig({ dataDir: tempDir('narwhal-store-nar-') }, {}))
  const nar = await runBytes('nix-store', ['--dump', '/bin'])
  const fileHash = fileHashOf(nar)
  cache.blobs.commitNar = (): void => { throw Object.assign(new Error('simulated rename failure'), { code: 'EIO' }) }
  await assert.rejects(storeNar(Readable.from([nar]), fileHash, cache, { maxBytes: nar.length, declaredBytes: 0, reserveBytes: 0 }),
    /simulated rename failure/)
  assert.equal(cache.metadata.narFile(fileHash), undefined)
  assert.deepEqual(readdirSync(cache.layout.tmpDir), [])
  cache.db.close()
})
