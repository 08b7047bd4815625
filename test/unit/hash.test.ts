/**
 * Hash strings: every spelling Nix accepts for a SHA-256, and the ones it (and we) refuse.
 */

import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { formatNixHash, parseNixHash, sha256Nix32 } from '../../src/nix/hash.js'

const EMPTY = createHash('sha256').update('').digest()
const EMPTY_NIX32 = '0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73'
const EMPTY_HEX = EMPTY.toString('hex')
const EMPTY_B64 = EMPTY.toString('base64')

test('all spellings of one SHA-256 parse to the same bytes', () => {
  for (const s of [
    `sha256:${EMPTY_NIX32}`,
    `sha256:${EMPTY_HEX}`,
    `sha256:${EMPTY_HEX.toUpperCase()}`,
    `sha256:${EMPTY_B64}`,
    `sha256-${EMPTY_B64}`,
    `sha256-${EMPTY_B64.replace(/=+$/, '')}`
  ]) {
    assert.deepEqual(parseNixHash(s, 'NarHash'), EMPTY, s)
  }
})

test('formatNixHash writes sha256:<nix32>', () => {
  assert.equal(formatNixHash(EMPTY), `sha256:${EMPTY_NIX32}`)
  assert.equal(sha256Nix32(''), EMPTY_NIX32)
  assert.throws(() => formatNixHash(Buffer.alloc(20)))
})

test('parseNixHash refuses everything else, naming the field', () => {
  const md5 = createHash('md5').update('').digest('hex')
  const sha512 = createHash('sha512').update('').digest('hex')
  for (const bad of [
    EMPTY_NIX32, // no type prefix
    EMPTY_HEX,
    `SHA256:${EMPTY_NIX32}`,
    `md5:${md5}`,
    `sha1:${createHash('sha1').update('').digest('hex')}`,
    `sha512:${sha512}`,
    `sha512-${createHash('sha512').update('').digest('base64')}`,
    `sha256:${EMPTY_NIX32.slice(1)}`,
    `sha256:${EMPTY_NIX32}0`,
    `sha256:${EMPTY_NIX32.toUpperCase()}`,
    `sha256:${EMPTY_HEX.slice(2)}`,
    `sha256:${EMPTY_HEX.slice(0, -1)}g`,
    `sha256:${EMPTY_B64.replace(/=$/, '')}`, // prefixed base64 needs its padding
    `sha256:${EMPTY_B64.replace(/\//g, '_').replace(/\+/g, '-')}`, // URL-safe alphabet
    `sha256:${EMPTY_B64.slice(0, 42)}V=`, // non-zero bits in the last character
    `sha256-${EMPTY_B64.slice(0, 40)}`,
    `sha256- ${EMPTY_B64}`,
    'sha256:',
    ''
  ]) {
    assert.throws(() => parseNixHash(bad, 'narinfo field NarHash'),
      (err: unknown) => {
        assert.ok(err instanceof Error)
        assert.equal((err as { code?: string }).code, 'NARWHAL_NARINFO_INVALID')
        assert.match(err.message, /^narinfo field NarHash: /)
        return true
      }, bad)
  }
})

test('parseNixHash can throw another code for use outside narinfos', () => {
  assert.throws(() => parseNixHash('x', 'hash', 'NARWHAL_BAD_REQUEST'), { code: 'NARWHAL_BAD_REQUEST' })
})
