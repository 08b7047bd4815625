/**
 * Fingerprints against the real cache.nixos.org signature: the exact bytes, and proof that the
 * signature breaks when anything it covers changes.
 */

import { test } from 'node:test'
import assert from 'node:assert/strict'
import { fingerprintNarInfo, fingerprintPath } from '../../src/nix/fingerprint.js'
import { parseNarInfo } from '../../src/nix/narinfo.js'
import { parsePublicKey } from '../../src/signing/keys.js'
import { readFixtureText } from './nix-test-helpers.js'

const HELLO = parseNarInfo(readFixtureText('cache.nixos.org', 'hello-2.10.narinfo'))
const EXPECTED = readFixtureText('cache.nixos.org', 'hello-2.10.fingerprint')
const CACHE_KEY = parsePublicKey(readFixtureText('cache.nixos.org', 'public-key'))
const SIG = HELLO.sigs[0] ?? ''

test('the hello-2.10 fingerprint is exactly the published bytes', () => {
  assert.equal(EXPECTED,
    '1;/nix/store/xcp9cav49dmsjbwdjlmkjxj10gkpx553-hello-2.10;sha256:16mvl7v0ylzcg2n3xzjn41qhzbmgcn5iyarx16nn5l2r36n2kqci;' +
    '206104;/nix/store/563528481rvhc5kxwipjmg6rqrl95mdx-glibc-2.33-56,/nix/store/xcp9cav49dmsjbwdjlmkjxj10gkpx553-hello-2.10')
  assert.equal(fingerprintNarInfo(HELLO), EXPECTED)
})

test('the cache.nixos.org signature verifies over it', () => {
  assert.equal(CACHE_KEY.toString(), 'cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=')
  assert.ok(SIG.startsWith('cache.nixos.org-1:'))
  assert.equal(CACHE_KEY.verify(fingerprintNarInfo(HELLO), SIG), true)
})

test('the signature does not verify when a reference is dropped', () => {
  for (const ref of HELLO.references) {
    const references = HELLO.references.filter(r => r !== ref)
    assert.equal(CACHE_KEY.verify(fingerprintNarInfo({ ...HELLO, references }), SIG), false, ref)
  }
})

test('the signature does not verify when NarSize, NarHash or StorePath change', () => {
  assert.equal(CACHE_KEY.verify(fingerprintNarInfo({ ...HELLO, narSize: HELLO.narSize + 1n }), SIG), false)
  const narHash = Buffer.from(HELLO.narHash)
  narHash[0] = (narHash[0] ?? 0) ^ 1
  assert.equal(CACHE_KEY.verify(fingerprintNarInfo({ ...HELLO, narHash }), SIG), false)
  assert.equal(CACHE_KEY.verify(fingerprintNarInfo({
    ...HELLO, storePath: '/nix/store/xcp9cav49dmsjbwdjlmkjxj10gkpx553-hello-2.11'
  }), SIG), false)
})

test('a fingerprint with the hash in hex does not verify: Nix signs the nix32 form', () => {
  const hex = EXPECTED.replace('sha256:16mvl7v0ylzcg2n3xzjn41qhzbmgcn5iyarx16nn5l2r36n2kqci',
    'sha256:91e129ac1959d062ad093d2b1f8b65afae0f712056fe3eac78ec530ff6a1bb9a')
  assert.notEqual(hex, EXPECTED)
  assert.equal(CACHE_KEY.verify(hex, SIG), false)
})

test('fields outside the fingerprint do not matter', () => {
  const other = { ...HELLO, url: 'nar/other.nar.zst', compression: 'zstd', fileSize: 1n, deriver: undefined, ca: 'x' }
  assert.equal(fingerprintNarInfo(other), EXPECTED)
})

test('references are full paths, sorted byte-wise and de-duplicated, whatever order they come in', () => {
  const refs = ['xcp9cav49dmsjbwdjlmkjxj10gkpx553-hello-2.10', '563528481rvhc5kxwipjmg6rqrl95mdx-glibc-2.33-56']
  assert.equal(fingerprintPath(HELLO.storePath, HELLO.narHash, HELLO.narSize, [...refs, refs[1] ?? '']), EXPECTED)
  // Byte order: digits < uppercase < lowercase, unlike a locale-aware sort.
  const fp = fingerprintPath(HELLO.storePath, HELLO.narHash, 1n, [
    'zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz-a', '00000000000000000000000000000000-b', 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-C'
  ])
  assert.ok(fp.endsWith(';1;/nix/store/00000000000000000000000000000000-b,' +
    '/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-C,/nix/store/zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz-a'))
})

test('no references: the fingerprint ends in ";"', () => {
  const fp = fingerprintPath(HELLO.storePath, HELLO.narHash, 5n, [])
  assert.ok(fp.endsWith(';5;'))
})

test('NarSize 0 cannot be fingerprinted', () => {
  assert.throws(() => fingerprintPath(HELLO.storePath, HELLO.narHash, 0n, []), { code: 'NARWHAL_NARINFO_INVALID' })
})
