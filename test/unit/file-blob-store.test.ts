/**
 * The data folder as a BlobStore: the contract every store keeps (test/helpers/blob-store-contract.ts),
 * and what only the folder does: an interrupted upload's temp file is swept at start and reported
 * by leftovers() once stale; the fast path's immediate reads agree with open().
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { readdirSync, rmSync, utimesSync } from 'node:fs'
import path from 'node:path'
import { FileBlobStore } from '../../src/storage/file-blob-store.js'
import { layoutFor } from '../../src/storage/layout.js'
import { blobStoreContract } from '../helpers/blob-store-contract.js'
import { fileHashOf } from '../helpers/upload.js'
import { tempDir } from '../helpers/nix.js'

function freshStore (): FileBlobStore {
  const store = new FileBlobStore(layoutFor(tempDir('narwhal-file-blobs-')))
  store.init()
  return store
}

blobStoreContract('folder', async () => {
  const store = freshStore()
  return { store, close: async () => { rmSync(store.layout.dataDir, { recursive: true, force: true }) } }
})

test('folder: an interrupted upload is in flight while young, stale later, and swept away', async (t) => {
  const store = freshStore()
  t.after(() => { rmSync(store.layout.dataDir, { recursive: true, force: true }) })
  const blob = await store.begin()
  await blob.write(randomBytes(1000))
  await blob.finish()
  const [part] = readdirSync(store.layout.tmpDir)
  assert.ok(part !== undefined)
  const file = path.join(store.layout.tmpDir, part)
  const kinds = async (youngSince: number): Promise<string[]> => {
    const found: string[] = []
    for await (const leftover of store.leftovers(youngSince)) found.push(`${leftover.kind} ${leftover.subject}`)
    return found
  }
  assert.deepEqual(await kinds(Date.now() - 60_000), [`in-flight ${file}`])
  const hourAgo = new Date(Date.now() - 3600_000)
  utimesSync(file, hourAgo, hourAgo)
  assert.deepEqual(await kinds(Date.now() - 60_000), [`stale-temp ${file}`])
  await store.sweep()
  assert.deepEqual(await kinds(0), [])
})

test('folder: immediate reads see what open() sees, and nothing of another size', async (t) => {
  const store = freshStore()
  t.after(() => { rmSync(store.layout.dataDir, { recursive: true, force: true }) })
  const bytes = randomBytes(4000)
  const name = { fileHash: fileHashOf(bytes), compression: 'none' }
  assert.equal(store.immediate.size(name.fileHash), undefined)
  assert.equal(store.immediate.readWhole(name.fileHash, bytes.length), undefined)
  const blob = await store.begin()
  await blob.write(bytes)
  await blob.finish()
  await blob.commit(name)
  assert.equal(store.immediate.size(name.fileHash), bytes.length)
  assert.ok(store.immediate.readWhole(name.fileHash, bytes.length)?.equals(bytes))
  assert.equal(store.immediate.readWhole(name.fileHash, bytes.length + 1), undefined, 'a size other than the recorded one is not served')
})

test('folder: removeLeftover refuses anything outside the NAR store', async (t) => {
  const store = freshStore()
  t.after(() => { rmSync(store.layout.dataDir, { recursive: true, force: true }) })
  await assert.rejects(store.removeLeftover(store.layout.database), /not in the NAR store/)
  await assert.rejects(store.removeLeftover(path.join(store.layout.tmpDir, '..', '..', 'narwhal.sqlite')), /not in the NAR store/)
})
