/**
 * A large upload's temp file is synced in the background every 16 MiB while it arrives
 * (TempFile.startEarlySync, storage/temp-file.ts). If one of those syncs fails, the upload fails,
 * even when the final fsync then succeeds: after a failed write-back Linux may report the error
 * once and then call the pages clean, so the final fsync's success proves nothing. The upload
 * leaves nothing in store/tmp.
 *
 * A disk that fails fdatasync cannot be had here, so fs.fdatasync is replaced, and before
 * temp-file.ts is loaded: it binds fs.fdatasync when it is imported. That is why this file
 * imports it itself, after the replacement (each test file runs in its own process).
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import fs, { readdirSync } from 'node:fs'
import { Readable } from 'node:stream'

let failingSyncs = 0
let syncsSeen = 0
const realFdatasync = fs.fdatasync
fs.fdatasync = ((fd: number, callback: (err: NodeJS.ErrnoException | null) => void): void => {
  syncsSeen++
  if (failingSyncs === 0) { realFdatasync(fd, callback); return }
  failingSyncs--
  const err: NodeJS.ErrnoException = Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO', errno: -5, syscall: 'fdatasync' })
  process.nextTick(callback, err)
}) as typeof fs.fdatasync

const { FileBlobStore } = await import('../../src/storage/file-blob-store.js')
const { TempFile } = await import('../../src/storage/temp-file.js')
const { layoutFor } = await import('../../src/storage/layout.js')
const { ingestNar } = await import('../../src/storage/nar-ingest.js')
const { fileHashOf } = await import('../helpers/upload.js')
const { narOf } = await import('../fuzz/arbitraries.js')
const { makeTempDir } = await import('./nix-test-helpers.js')

/** An uncompressed NAR of one 20 MiB file: past the first background sync, in 64 KiB chunks. */
const nar = narOf({ type: 'regular', contents: randomBytes(20 << 20), executable: false })
const fileHash = fileHashOf(nar)
const chunks = Array.from({ length: Math.ceil(nar.length / 65536) }, (_, i) => nar.subarray(i * 65536, (i + 1) * 65536))

function freshStore (t: { after: (fn: () => void) => void }): InstanceType<typeof FileBlobStore> {
  const { dir, cleanup } = makeTempDir()
  t.after(cleanup)
  const store = new FileBlobStore(layoutFor(dir))
  store.init()
  return store
}

async function ingest (store: InstanceType<typeof FileBlobStore>): ReturnType<typeof ingestNar> {
  return await ingestNar(Readable.from(chunks), fileHash, store, { maxBytes: 1 << 30, maxNarSize: 1 << 30, declaredBytes: nar.length, reserveBytes: 0 })
}

test('with every sync succeeding, the upload is verified and its temp file synced (the control)', async (t) => {
  const store = freshStore(t)
  syncsSeen = 0
  const verified = await ingest(store)
  assert.equal(verified.nar.fileHash, fileHash)
  assert.ok(syncsSeen >= 1, 'a background sync ran during the upload')
  const { blob } = verified
  assert.ok(blob instanceof TempFile)
  assert.equal(blob.bytesSynced, nar.length)
  await blob.discard()
  assert.deepEqual(readdirSync(store.layout.tmpDir), [])
})

test('a background sync that fails fails the upload, though the final fsync succeeds, and leaves nothing', async (t) => {
  const store = freshStore(t)
  failingSyncs = 1
  await assert.rejects(ingest(store), (err: NodeJS.ErrnoException) => err.code === 'EIO')
  assert.equal(failingSyncs, 0, 'the failing sync was the one that ran')
  assert.deepEqual(readdirSync(store.layout.tmpDir), [], 'the temp file is removed')
})
