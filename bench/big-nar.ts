/**
 * A NAR of one regular file of `size` bytes, all `fill`, generated on the fly so a 4 GiB upload
 * needs no 4 GiB of anything: the memory benchmark's payload.
 */
import { createHash } from 'node:crypto'
import { Readable } from 'node:stream'
import { encodeNix32 } from '../src/nix/nix32.js'

function str (s: string): Buffer {
  const bytes = Buffer.from(s)
  const header = Buffer.alloc(8)
  header.writeBigUInt64LE(BigInt(bytes.length))
  const pad = Buffer.alloc((8 - (bytes.length % 8)) % 8)
  return Buffer.concat([header, bytes, pad])
}

export function * bigNarChunks (size: number, fill: number): Generator<Buffer> {
  const length = Buffer.alloc(8)
  length.writeBigUInt64LE(BigInt(size))
  yield Buffer.concat(['nix-archive-1', '(', 'type', 'regular', 'contents'].map(str).concat([length]))
  const block = Buffer.alloc(1 << 20, fill)
  let left = size
  while (left > 0) {
    const n = Math.min(left, block.length)
    yield n === block.length ? block : block.subarray(0, n)
    left -= n
  }
  yield Buffer.alloc((8 - (size % 8)) % 8)
  yield str(')')
}

export function bigNarStream (size: number, fill: number): Readable {
  return Readable.from(bigNarChunks(size, fill), { objectMode: false })
}

export function bigNarInfo (size: number, fill: number): { fileHash: string, length: number } {
  const hash = createHash('sha256')
  let length = 0
  for (const chunk of bigNarChunks(size, fill)) {
    hash.update(chunk)
    length += chunk.length
  }
  return { fileHash: encodeNix32(hash.digest()), length }
}
