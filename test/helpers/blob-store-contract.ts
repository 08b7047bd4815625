/**
 * What every BlobStore (src/storage/blob-store.ts) promises, as tests any implementation runs
 * against a real store of its kind (the data folder: test/unit/file-blob-store.test.ts; a bucket).
 * Only the interface is used: no paths, no peeking behind it.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { PassThrough } from 'node:stream'
import type { BlobStore, NarName } from '../../src/storage/blob-store.js'
import { encodeNix32 } from '../../src/nix/nix32.js'

export interface ContractStore {
  store: BlobStore
  close: () => Promise<void>
}

function nameOf (bytes: Buffer, compression = 'zstd'): NarName {
  return { fileHash: encodeNix32(createHash('sha256').update(bytes).digest()), compression }
}

async function put (store: BlobStore, bytes: Buffer, chunkSize = 65536): Promise<NarName> {
  const name = nameOf(bytes)
  const blob = await store.begin()
  try {
    for (let i = 0; i < bytes.length; i += chunkSize) await blob.write(bytes.subarray(i, i + chunkSize))
    await blob.finish()
    await blob.commit(name)
  } finally {
    await blob.discard()
  }
  return name
}

async function readAll (store: BlobStore, name: NarName, range?: { start: number, end: number }): Promise<Buffer | undefined> {
  const read = await store.open(name, range)
  if (read === undefined) return undefined
  assert.equal(read.kind, 'body', 'the contract reads bodies (a store configured to redirect is checked by its own tests)')
  if (read.kind !== 'body') return undefined
  const chunks: Buffer[] = []
  for await (const chunk of read.chunks()) chunks.push(chunk)
  return Buffer.concat(chunks)
}

async function listed (store: BlobStore): Promise<Map<string, number>> {
  const found = new Map<string, number>()
  for await (const blob of store.list()) found.set(blob.fileHash, blob.size)
  return found
}

/** Registers the contract's tests; `make` gives a fresh, empty store. */
export function blobStoreContract (kind: string, make: () => Promise<ContractStore>): void {
  const withStore = (title: string, fn: (store: BlobStore) => Promise<void>): void => {
    test(`${kind}: ${title}`, async () => {
      const { store, close } = await make()
      try { await fn(store) } finally { await close() }
    })
  }

  withStore('an object is invisible until committed, then read back whole, by range and by size', async (store) => {
    const bytes = randomBytes(3 * 1024 * 1024 + 17)
    const name = nameOf(bytes)
    const blob = await store.begin()
    for (let i = 0; i < bytes.length; i += 65536) await blob.write(bytes.subarray(i, i + 65536))
    await blob.finish()
    assert.equal(await store.open(name), undefined, 'finished but not committed: not there')
    assert.equal(await store.size(name), undefined)
    await blob.commit(name)
    await blob.discard() // after commit: a no-op
    assert.equal(await store.size(name), bytes.length)
    assert.ok((await readAll(store, name))?.equals(bytes))
    assert.ok((await readAll(store, name, { start: 1000, end: 200_000 }))?.equals(bytes.subarray(1000, 200_001)))
    const read = await store.open(name, { start: 5, end: 9 })
    assert.ok(read?.kind === 'body')
    assert.equal(read.size, bytes.length, 'size is the whole object\'s')
    assert.equal(read.length, 5)
    assert.ok((await read.read()).equals(bytes.subarray(5, 10)))
    assert.deepEqual(await listed(store), new Map([[name.fileHash, bytes.length]]))
  })

  withStore('a discarded upload leaves nothing a reader or list() sees', async (store) => {
    const bytes = randomBytes(100_000)
    const blob = await store.begin()
    await blob.write(bytes)
    await blob.discard()
    await blob.discard() // idempotent
    assert.equal(await store.open(nameOf(bytes)), undefined)
    assert.deepEqual(await listed(store), new Map())
  })

  withStore('committing an object that is already there succeeds and keeps its bytes', async (store) => {
    const bytes = randomBytes(70_000)
    const name = await put(store, bytes)
    assert.deepEqual(await put(store, bytes), name)
    assert.ok((await readAll(store, name))?.equals(bytes))
  })

  withStore('delete removes an object; deleting a missing one succeeds', async (store) => {
    const keep = await put(store, randomBytes(1000))
    const gone = await put(store, randomBytes(2000))
    await store.delete(gone)
    await store.delete(gone)
    await store.delete({ fileHash: nameOf(randomBytes(10)).fileHash, compression: undefined })
    assert.equal(await store.open(gone), undefined)
    assert.deepEqual([...(await listed(store)).keys()], [keep.fileHash])
  })

  withStore('a body sent to a stream delivers its bytes; an unsent one can be closed', async (store) => {
    const bytes = randomBytes(9 * 1024 * 1024 + 3) // past the event-loop read loop's 8 MiB
    const name = await put(store, bytes, 1 << 20)
    const read = await store.open(name)
    assert.ok(read?.kind === 'body')
    const sink = new PassThrough()
    const received: Buffer[] = []
    // Copied: a chunk's memory may be reused once the sink took it (as a socket does).
    sink.on('data', (chunk: Buffer) => received.push(Buffer.from(chunk)))
    assert.equal(await read.send(sink), undefined)
    assert.ok(Buffer.concat(received).equals(bytes))
    const unsent = await store.open(name)
    assert.ok(unsent?.kind === 'body')
    unsent.close()
    unsent.close()
  })

  withStore('an empty object is stored and read back empty', async (store) => {
    const name = await put(store, Buffer.alloc(0))
    assert.equal(await store.size(name), 0)
    assert.deepEqual(await readAll(store, name), Buffer.alloc(0))
  })

  withStore('nothing is left over after committed and discarded uploads', async (store) => {
    await put(store, randomBytes(5000))
    const blob = await store.begin()
    await blob.write(randomBytes(5000))
    await blob.discard()
    const left = []
    for await (const leftover of store.leftovers(Date.now() + 60_000)) left.push(leftover)
    assert.deepEqual(left, [])
  })
}
