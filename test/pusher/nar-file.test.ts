/**
 * The pusher's compressed NAR files: wherever the compressed bytes are kept for the upload (in
 * memory, spilled to a temp file part way, or in the file from the start), they must be a zstd
 * stream of exactly the NAR `nix-store --dump` writes (or that NAR itself, uncompressed), and hash
 * to the file hash the URL names. A NAR streamed from the store is that NAR too.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { decompress } from 'zstd-napi'
import { dumpCompressed, StoreNarBody, type NarFile } from '../../src/pusher/nar-file.js'
import { addStorePath, fileHashOf, runBytes, sha256 } from '../helpers/upload.js'
import { tempDir } from '../helpers/nix.js'

function compressedBytes (nar: NarFile): Buffer {
  if (nar.chunks !== undefined) return Buffer.concat(nar.chunks)
  assert.ok(nar.file !== undefined, 'a NAR file is either in memory or in a temp file')
  return readFileSync(nar.file)
}

const cases = [
  { what: 'a small path, kept in memory', randomBytes: 300, memoryBytes: 1 << 30, inMemory: true },
  // 12 MiB of random bytes do not compress: the output fills several slabs, up to the largest.
  { what: 'a 12 MiB path, kept in memory', randomBytes: 12 << 20, memoryBytes: 1 << 30, inMemory: true },
  { what: 'a 12 MiB path, spilled to its temp file after 3 MiB', randomBytes: 12 << 20, memoryBytes: 3 << 20, inMemory: false },
  { what: 'a 12 MiB path, in its temp file from the start', randomBytes: 12 << 20, memoryBytes: 0, inMemory: false }
]

for (const c of cases) {
  for (const compression of ['zstd', 'none'] as const) {
    test(`the ${compression === 'none' ? 'uncompressed' : 'compressed'} NAR of ${c.what} is nix-store --dump's NAR, named by its hash`, async () => {
      const storePath = await addStorePath({ randomBytes: c.randomBytes, name: 'narwhal-nar-file-test' })
      const dumped = await runBytes('nix-store', ['--dump', storePath])
      const nar = await dumpCompressed(storePath, tempDir('narwhal-nar-file-'), compression, undefined, 'in-process', c.memoryBytes)
      assert.equal(nar.chunks !== undefined, c.inMemory, c.inMemory ? 'kept in memory' : 'kept in a temp file')
      const bytes = compressedBytes(nar)
      assert.equal(bytes.length, nar.fileSize)
      assert.equal(fileHashOf(bytes), nar.fileHash, 'the file hash is the hash of the bytes uploaded')
      const decompressed = compression === 'none' ? bytes : decompress(bytes)
      assert.equal(decompressed.length, dumped.length)
      assert.ok(decompressed.equals(dumped), 'decompresses to exactly what nix-store --dump writes')
      assert.ok(nar.narHash.equals(sha256(dumped)))
      assert.equal(nar.narSize, dumped.length)
    })
  }
}

test('a store path streamed uncompressed gives nix-store --dump\'s NAR, each time it is read; one unlike its record fails before its last bytes', async () => {
  const storePath = await addStorePath({ randomBytes: 3 << 20, name: 'narwhal-nar-file-test' })
  const dumped = await runBytes('nix-store', ['--dump', storePath])
  const body = new StoreNarBody(storePath, sha256(dumped), dumped.length)
  assert.deepEqual([body.nar.url, body.nar.fileHash, body.nar.fileSize], [`nar/${fileHashOf(dumped)}.nar`, fileHashOf(dumped), dumped.length])
  for (let read = 0; read < 2; read++) {
    const chunks: Buffer[] = []
    for await (const chunk of body.chunks()) chunks.push(chunk)
    assert.ok(Buffer.concat(chunks).equals(dumped), `read ${read + 1}: the bytes of nix-store --dump`)
    assert.equal(body.fault, undefined)
  }
  const wrong = new StoreNarBody(storePath, sha256(Buffer.from('another NAR')), dumped.length)
  let sent = 0
  await assert.rejects(async () => { for await (const chunk of wrong.chunks()) sent += chunk.length }, /does not match the recorded NarHash/)
  assert.ok(wrong.fault instanceof Error, 'the fault is the store\'s side')
  assert.ok(sent < dumped.length, `${sent} of ${dumped.length} bytes handed out before the refusal`)
})
