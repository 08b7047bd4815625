/**
 * Rule (fact sheet §4.4, §13.10): sizes are 64-bit everywhere. A NAR that decompresses to more
 * than 4 GiB is accepted, verified to its end, and its NarSize recorded and served exactly.
 *
 * The NAR (one regular file of 4.5 GiB of zeros) is generated on the fly following the NAR
 * grammar and streamed through narwhal's zstd compressor, so it is never held in memory; the
 * compressed file is a few hundred KiB.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { Readable } from 'node:stream'
import { generateKeyPair } from '../../src/signing/keys.js'
import { decodeNix32, encodeNix32 } from '../../src/nix/nix32.js'
import { narLength, narPadding, narString } from '../../src/nix/nar-encoding.js'
import { createCompressor } from '../../src/nix/codecs.js'
import { startServer } from '../helpers/server.js'
import { collect, fileHashOf, get, makeNarinfo, put, type Nar } from '../helpers/upload.js'

const FILE_BYTES = 4.5 * 1024 ** 3
/**
 * The NAR hash of a 4.5 GiB file of zeros, computed by the real Nix 2.8:
 *   truncate -s 4831838208 zeros && nix-hash --type sha256 --base32 zeros
 * A golden value spares the test hashing 4.5 GiB itself, and checks the generator below as well.
 */
const NAR_HASH = '01prfia1crfmi5lgag4gbng7q95y0wppil039davby0kdqyiavhf'

/** `nix-store --dump` of a single regular file of `size` zero bytes, yielded in 8 MiB chunks. */
async function * zeroFileNar (size: number, counter: { bytes: number }): AsyncGenerator<Buffer> {
  const emit = (chunk: Buffer): Buffer => { counter.bytes += chunk.length; return chunk }
  yield emit(Buffer.concat([...['nix-archive-1', '(', 'type', 'regular', 'contents'].map(narString), narLength(size)]))
  const zeros = Buffer.alloc(8 << 20)
  let left = size
  while (left > 0) {
    const n = Math.min(left, zeros.length)
    yield emit(n === zeros.length ? zeros : zeros.subarray(0, n))
    left -= n
  }
  yield emit(Buffer.concat([narPadding(size), narString(')')]))
}

test('a NAR of more than 4 GiB is accepted and its NarSize recorded and served exactly', { timeout: 120_000 }, async (t) => {
  const started = Date.now()
  const key = generateKeyPair('test-uploader-1')
  const server = await startServer(t, { trustedKeys: [key.publicKeyText] })

  const counter = { bytes: 0 }
  const compressed = await collect(Readable.from(zeroFileNar(FILE_BYTES, counter)).pipe(createCompressor('zstd')))
  const narSize = counter.bytes
  // header tokens (13+1+4+7+8 bytes, each padded, plus their lengths), u64 size, contents, ")".
  assert.equal(narSize, 24 + 16 + 16 + 16 + 16 + 8 + FILE_BYTES + 16)
  assert.ok(narSize > 2 ** 32)
  assert.ok(compressed.length < 4 * 1024 * 1024, `compressed to ${compressed.length} bytes`)
  const generated = Date.now()

  const fileHash = fileHashOf(compressed)
  const token = await server.token('push')
  const answer = await put(`${server.url}/nar/${fileHash}.nar.zst`, compressed, token)
  assert.equal(answer.status, 201, answer.body)
  const uploaded = Date.now()

  const row = (await server.cache.metadata.narFiles.get(fileHash))
  assert.ok(row !== undefined)
  assert.equal(row.narSize, narSize)
  assert.equal(row.fileSize, compressed.length)
  assert.equal(row.compression, 'zstd')
  assert.equal(row.narHash, NAR_HASH)

  // A narinfo for it, so the 64-bit NarSize goes through parsing, signing and serving too.
  const hashPart = encodeNix32(randomBytes(20))
  const nar: Nar = {
    storePath: `/nix/store/${hashPart}-narwhal-zeros-4.5GiB`,
    baseName: `${hashPart}-narwhal-zeros-4.5GiB`,
    hashPart,
    nar: Buffer.alloc(0),
    bytes: compressed,
    compression: 'zstd',
    fileHash,
    url: `nar/${fileHash}.nar.zst`,
    narHash: decodeNix32(NAR_HASH),
    narSize: BigInt(narSize)
  }
  const narinfo = makeNarinfo(nar, { keys: [key.secretKey] })
  const narinfoAnswer = await put(`${server.url}/${hashPart}.narinfo`, narinfo, token)
  assert.equal(narinfoAnswer.status, 201, narinfoAnswer.body)
  const served = await get(`${server.url}/${hashPart}.narinfo`)
  assert.match(served.body, new RegExp(`\nNarSize: ${narSize}\n`))
  assert.equal((await server.cache.metadata.narinfos.get(hashPart))?.narSize, narSize)

  t.diagnostic(`NAR of ${narSize} bytes → ${compressed.length} bytes zstd; generated and compressed in ` +
    `${generated - started} ms, uploaded and verified in ${uploaded - generated} ms, total ${Date.now() - started} ms`)
})
