/**
 * NAR objects put into, read from and taken out of a cache's blob store through its public
 * interface (storage/blob-store.ts), for tests that need a store in a given state (an object
 * without its row, a row without its object, damaged bytes) on whichever backend the suite runs.
 */
import path from 'node:path'
import type { BlobStore, NarName } from '../../src/storage/blob-store.js'
import { layoutFor } from '../../src/storage/layout.js'
import { backendFor } from './backend.js'

/** Stores `bytes` as the object `name`, as an upload does but without verifying them (a fixture may lie). */
export async function putNar (blobs: BlobStore, name: NarName, bytes: Uint8Array): Promise<void> {
  const blob = await blobs.begin()
  try {
    if (bytes.length > 0) await blob.write(bytes)
    await blob.finish()
    await blob.commit(name)
  } finally {
    await blob.discard()
  }
}

/** Replaces the object `name` by `bytes` (damage: a truncated or altered object). */
export async function replaceNar (blobs: BlobStore, name: NarName, bytes: Uint8Array): Promise<void> {
  await blobs.delete(name)
  await putNar(blobs, name, bytes)
}

/** Removes the object `name` (a lost object); one already gone is success. */
export async function removeNar (blobs: BlobStore, name: NarName): Promise<void> {
  await blobs.delete(name)
}

/** True when the store holds the object `name`. */
export async function holdsObject (blobs: BlobStore, name: NarName): Promise<boolean> {
  return (await blobs.size(name)) !== undefined
}

/** The bytes of the object `name`, or undefined when the store lacks it. */
export async function readNar (blobs: BlobStore, name: NarName): Promise<Buffer | undefined> {
  const read = await blobs.open(name)
  if (read === undefined) return undefined
  if (read.kind !== 'body') throw new Error(`${name.fileHash}: the store answered a redirect, not a body`)
  const chunks: Buffer[] = []
  for await (const chunk of read.chunks()) chunks.push(chunk)
  return Buffer.concat(chunks)
}

/**
 * What uploads left behind in the store of the cache in `dataDir`: temp files in store/tmp, or a
 * bucket's tmp/ objects and unfinished multipart uploads. Empty once every upload ended.
 */
export async function uploadLeftovers (dataDir: string): Promise<string[]> {
  const tmpDir = layoutFor(dataDir).tmpDir + path.sep
  return (await (await backendFor(dataDir)).stored()).filter(f => f.startsWith(tmpDir) || f.startsWith('tmp/') || f.startsWith('upload:'))
}
