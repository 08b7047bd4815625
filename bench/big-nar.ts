/**
 * A NAR of one regular file of `size` bytes, all `fill`, generated on the fly so a 4 GiB upload
 * needs no 4 GiB of anything: the memory benchmark's payload.
 */
import { createHash } from 'node:crypto'
import { Readable } from 'node:stream'
import { narLength, narPadding, narString } from '../src/nix/nar-encoding.js'
import { encodeNix32 } from '../src/nix/nix32.js'

export function * bigNarChunks (size: number, fill: number): Generator<Buffer> {
  yield Buffer.concat(['nix-archive-1', '(', 'type', 'regular', 'contents'].map(narString).concat([narLength(size)]))
  const block = Buffer.alloc(1 << 20, fill)
  let left = size
  while (left > 0) {
    const n = Math.min(left, block.length)
    yield n === block.length ? block : block.subarray(0, n)
    left -= n
  }
  yield Buffer.from(narPadding(size))
  yield narString(')')
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
