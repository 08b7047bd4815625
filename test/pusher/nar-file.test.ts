/**
 * The pusher's compressed NAR files: wherever the compressed bytes are kept for the upload (in
 * memory, spilled to a temp file part way, or in the file from the start), they must be a zstd
 * stream of exactly the NAR `nix-store --dump` writes, and hash to the file hash the URL names.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { decompress } from 'zstd-napi'
import { dumpCompressed, type NarFile } from '../../src/pusher/nar-file.js'
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
  test(`the compressed NAR of ${c.what} is nix-store --dump's NAR, named by its hash`, async () => {
    const storePath = await addStorePath({ randomBytes: c.randomBytes, name: 'narwhal-nar-file-test' })
    const dumped = await runBytes('nix-store', ['--dump', storePath])
    const nar = await dumpCompressed(storePath, tempDir('narwhal-nar-file-'), 'zstd', undefined, 'in-process', c.memoryBytes)
    assert.equal(nar.chunks !== undefined, c.inMemory, c.inMemory ? 'kept in memory' : 'kept in a temp file')
    const bytes = compressedBytes(nar)
    assert.equal(bytes.length, nar.fileSize)
    assert.equal(fileHashOf(bytes), nar.fileHash, 'the file hash is the hash of the bytes uploaded')
    const decompressed = decompress(bytes)
    assert.equal(decompressed.length, dumped.length)
    assert.ok(decompressed.equals(dumped), 'decompresses to exactly what nix-store --dump writes')
    assert.ok(nar.narHash.equals(sha256(dumped)))
    assert.equal(nar.narSize, dumped.length)
  })
}
