/**
 * Verification runs on node:crypto (OpenSSL) for speed; it must agree with RFC 8032's strict rules
 * (as @noble/ed25519 implements them with zip215: false) on valid signatures, tampered ones and
 * the classic malleability case (S + L), and keys of small order are refused at load.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import * as ed from '@noble/ed25519'
import { generateKeyPair, parsePublicKey } from '../../src/signing/keys.js'

/** The order of the Ed25519 group. */
const L = 2n ** 252n + 27742317777372353535851937790883648493n

function addL (s: Buffer): Buffer {
  let n = 0n
  for (let i = 31; i >= 0; i--) n = (n << 8n) | BigInt(s[i] ?? 0)
  n += L
  const out = Buffer.alloc(32)
  for (let i = 0; i < 32; i++) { out[i] = Number(n & 0xffn); n >>= 8n }
  return out
}

test('node:crypto and RFC 8032 strict verification agree: valid, tampered, and S + L', () => {
  for (let i = 0; i < 40; i++) {
    const pair = generateKeyPair(`k-${i}`)
    const key = pair.secretKey.publicKey
    const message = randomBytes(20 + i).toString('base64')
    const sig = Buffer.from(pair.secretKey.sign(message).slice(`k-${i}:`.length), 'base64')
    const flipped = Buffer.from(sig)
    flipped[i % 64] = (flipped[i % 64] ?? 0) ^ (1 << (i % 8))
    const malleable = Buffer.concat([sig.subarray(0, 32), addL(sig.subarray(32))])
    for (const [what, bytes, data] of [['valid', sig, message], ['bit flipped', flipped, message],
      ['S + L', malleable, message], ['other message', sig, message + 'x']] as const) {
      const strict = ed.verify(bytes, Buffer.from(data), key.bytes, { zip215: false })
      assert.equal(key.verify(data, `k-${i}:${bytes.toString('base64')}`), strict, `${what} #${i}`)
      assert.equal(strict, what === 'valid', `${what} #${i}`)
    }
  }
})

test('a public key of small order is refused when loaded', () => {
  // y = 1 encodes the identity; y = -1 (p - 1) a point of order 2.
  const identity = Buffer.alloc(32)
  identity[0] = 1
  const orderTwo = Buffer.from('ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f', 'hex')
  for (const bytes of [identity, orderTwo]) {
    assert.throws(() => parsePublicKey(`k-1:${bytes.toString('base64')}`), { code: 'NARWHAL_KEY_INVALID', message: /small order/ })
  }
})
