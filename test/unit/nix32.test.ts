/**
 * nix32 against the published vectors and against the real `nix-hash --to-base32`.
 */

import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { decodeNix32, encodeNix32, NIX32_ALPHABET, nix32Length, tryDecodeNix32 } from '../../src/nix/nix32.js'
import { makeTempDir, runNix } from './nix-test-helpers.js'

const EMPTY_SHA256 = '0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73'
const HELLO_HEX = '91e129ac1959d062ad093d2b1f8b65afae0f712056fe3eac78ec530ff6a1bb9a'
const HELLO_NIX32 = '16mvl7v0ylzcg2n3xzjn41qhzbmgcn5iyarx16nn5l2r36n2kqci'

test('nix32 encodes the two golden vectors', () => {
  assert.equal(encodeNix32(createHash('sha256').update('').digest()), EMPTY_SHA256)
  assert.equal(encodeNix32(Buffer.from(HELLO_HEX, 'hex')), HELLO_NIX32)
})

test('nix32 decodes the two golden vectors', () => {
  assert.deepEqual(decodeNix32(EMPTY_SHA256), createHash('sha256').update('').digest())
  assert.equal(decodeNix32(HELLO_NIX32).toString('hex'), HELLO_HEX)
})

test('nix32 alphabet and lengths', () => {
  assert.equal(NIX32_ALPHABET, '0123456789abcdfghijklmnpqrsvwxyz')
  assert.equal(nix32Length(32), 52)
  assert.equal(nix32Length(20), 32)
  assert.equal(nix32Length(64), 103)
  assert.equal(nix32Length(0), 0)
  assert.equal(encodeNix32(new Uint8Array(0)), '')
  assert.deepEqual(decodeNix32(''), Buffer.alloc(0))
})

test('nix32 round-trips every length from 0 to 70 bytes', () => {
  for (let n = 0; n <= 70; n++) {
    const bytes = randomBytes(n)
    const text = encodeNix32(bytes)
    assert.equal(text.length, nix32Length(n))
    assert.deepEqual(decodeNix32(text), bytes, `length ${n}`)
  }
})

test('nix32 agrees with the real nix-hash --to-base32 (sha256 and sha1)', () => {
  const { dir, cleanup } = makeTempDir()
  try {
    const sha256s = Array.from({ length: 5 }, () => randomBytes(32).toString('hex'))
    const sha1s = Array.from({ length: 5 }, () => randomBytes(20).toString('hex'))
    const nix256 = runNix('nix-hash', ['--type', 'sha256', '--to-base32', ...sha256s], dir).trim().split('\n')
    const nix1 = runNix('nix-hash', ['--type', 'sha1', '--to-base32', ...sha1s], dir).trim().split('\n')
    assert.deepEqual(sha256s.map(h => encodeNix32(Buffer.from(h, 'hex'))), nix256)
    assert.deepEqual(sha1s.map(h => encodeNix32(Buffer.from(h, 'hex'))), nix1)
  } finally {
    cleanup()
  }
})

test('nix32 decoding is case-sensitive and rejects letters outside the alphabet', () => {
  assert.equal(tryDecodeNix32(HELLO_NIX32.toUpperCase()), undefined)
  for (const bad of ['e', 'o', 'u', 't', 'A', '-', ' ', 'é']) {
    const text = HELLO_NIX32.slice(0, 10) + bad + HELLO_NIX32.slice(11)
    assert.equal(tryDecodeNix32(text), undefined, JSON.stringify(bad))
  }
})

test('nix32 decoding rejects lengths no byte string encodes to', () => {
  for (const len of [1, 3, 6, 51, 54]) {
    assert.equal(tryDecodeNix32('0'.repeat(len)), undefined, `length ${len}`)
  }
})

test('nix32 decoding rejects non-zero bits beyond the last byte, like Nix', () => {
  // 52 chars carry 260 bits for 256: the first character may only be 0 or 1.
  assert.ok(tryDecodeNix32('1' + EMPTY_SHA256.slice(1)))
  for (const first of ['2', 'z']) {
    assert.equal(tryDecodeNix32(first + EMPTY_SHA256.slice(1)), undefined, first)
  }
})

test('decodeNix32 throws NARWHAL_BAD_REQUEST', () => {
  assert.throws(() => decodeNix32('xyz'), { name: 'NarwhalError', code: 'NARWHAL_BAD_REQUEST' })
})
