/**
 * Signing keys interchange with the real Nix both ways: keys Nix generates work here, keys made
 * here convert in Nix, and signatures cross in both directions through a file:// binary cache
 * that `nix store sign` and `nix store verify` operate on.
 */

import { test } from 'node:test'
import assert from 'node:assert/strict'
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { inspect } from 'node:util'
import { fingerprintNarInfo } from '../../src/nix/fingerprint.js'
import { formatNarInfo, parseNarInfo, type NarInfo } from '../../src/nix/narinfo.js'
import { generateKeyPair, parsePublicKey, parseSecretKey, PublicKey, TrustedKeys } from '../../src/signing/keys.js'
import { fixturePath, makeTempDir, readFixtureText, runNix } from './nix-test-helpers.js'

const FINGERPRINT = readFixtureText('cache.nixos.org', 'hello-2.10.fingerprint')
const CACHE_KEY_TEXT = readFixtureText('cache.nixos.org', 'public-key')

/**
 * A file:// binary cache holding tree.nar and its narinfo (without its CA, so only a signature
 * can make Nix trust it). Returns the store URL and the path.
 */
function makeFileCache (dir: string, info: NarInfo): string {
  const root = path.join(dir, 'cache')
  mkdirSync(path.join(root, 'nar'), { recursive: true })
  writeFileSync(path.join(root, 'nix-cache-info'), 'StoreDir: /nix/store\n')
  copyFileSync(fixturePath('nar', 'tree.nar'), path.join(root, info.url))
  writeFileSync(path.join(root, `${info.storePath.slice('/nix/store/'.length, '/nix/store/'.length + 32)}.narinfo`), formatNarInfo(info))
  return `file://${root}`
}

function treeInfo (): NarInfo {
  const info = parseNarInfo(readFixtureText('narinfo', 'nix-copy-tree-ca.narinfo'))
  delete info.ca
  return info
}

test('a key pair from nix-store --generate-binary-cache-key signs and verifies here', () => {
  const { dir, cleanup } = makeTempDir()
  try {
    const sk = path.join(dir, 'sk')
    const pk = path.join(dir, 'pk')
    runNix('nix-store', ['--generate-binary-cache-key', 'nix-made-1', sk, pk], dir)
    const secretKey = parseSecretKey(readFileSync(sk, 'utf8'))
    const publicKey = parsePublicKey(readFileSync(pk, 'utf8'))
    assert.equal(secretKey.name, 'nix-made-1')
    assert.equal(secretKey.publicKey.toString(), readFileSync(pk, 'utf8'))
    const sig = secretKey.sign(FINGERPRINT)
    assert.match(sig, /^nix-made-1:[A-Za-z0-9+/]{86}==$/)
    assert.equal(publicKey.verify(FINGERPRINT, sig), true)
    assert.equal(publicKey.verify(FINGERPRINT + 'x', sig), false)
  } finally {
    cleanup()
  }
})

test('Nix derives the same public key from a secret key made by generateKeyPair', () => {
  const { dir, cleanup } = makeTempDir()
  try {
    const pair = generateKeyPair('narwhal-test-1')
    assert.match(pair.secretKeyText, /^narwhal-test-1:[A-Za-z0-9+/]{86}==$/)
    assert.match(pair.publicKeyText, /^narwhal-test-1:[A-Za-z0-9+/]{43}=$/)
    const derived = runNix('nix', ['key', 'convert-secret-to-public'], dir, pair.secretKeyText).trim()
    assert.equal(derived, pair.publicKeyText)
    assert.equal(parseSecretKey(pair.secretKeyText).publicKey.toString(), pair.publicKeyText)
  } finally {
    cleanup()
  }
})

test('nix store verify accepts a narinfo signed here, and refuses a forged one', () => {
  const { dir, cleanup } = makeTempDir()
  try {
    const pair = generateKeyPair('narwhal-test-1')
    const info = treeInfo()
    info.sigs = [pair.secretKey.sign(fingerprintNarInfo(info))]
    const store = makeFileCache(dir, info)
    const args = ['store', 'verify', '--store', store, '--trusted-public-keys', pair.publicKeyText, info.storePath]
    runNix('nix', args, dir)

    // The same signature over a different NarSize: Nix must call the path untrusted.
    const forged = treeInfo()
    forged.sigs = [pair.secretKey.sign(fingerprintNarInfo({ ...forged, narSize: forged.narSize + 1n }))]
    const forgedDir = path.join(dir, 'forged')
    mkdirSync(forgedDir)
    const forgedStore = makeFileCache(forgedDir, forged)
    assert.throws(() => runNix('nix', ['store', 'verify', '--store', forgedStore, '--trusted-public-keys', pair.publicKeyText,
      forged.storePath], dir), (err: unknown) => String((err as { stderr?: unknown }).stderr).includes('untrusted'))
  } finally {
    cleanup()
  }
})

test('a signature added by nix store sign verifies here', () => {
  const { dir, cleanup } = makeTempDir()
  try {
    const sk = path.join(dir, 'sk')
    const pk = path.join(dir, 'pk')
    runNix('nix-store', ['--generate-binary-cache-key', 'nix-signer-1', sk, pk], dir)
    const info = treeInfo()
    const store = makeFileCache(dir, info)
    runNix('nix', ['store', 'sign', '--store', store, '--key-file', sk, info.storePath], dir)
    const signed = parseNarInfo(readFileSync(path.join(store.slice('file://'.length), 'bwrl86xqvhjn43s8r9hip0ix334xzg3y.narinfo'), 'utf8'))
    assert.equal(signed.sigs.length, 1)
    const trusted = new TrustedKeys([parsePublicKey(readFileSync(pk, 'utf8'))])
    assert.deepEqual(trusted.check(fingerprintNarInfo(signed), signed.sigs), { verifiedBy: ['nix-signer-1'], forgedUnderTrustedName: [] })
  } finally {
    cleanup()
  }
})

test('the secret key never shows in String(), JSON.stringify() or util.inspect()', () => {
  const pair = generateKeyPair('redact-1')
  const secretBase64 = pair.secretKeyText.slice('redact-1:'.length)
  const seedPrefix = secretBase64.slice(0, 40) // the seed alone, without the public half
  for (const shown of [String(pair.secretKey), `${pair.secretKey}`, JSON.stringify(pair.secretKey), inspect(pair.secretKey),
    inspect({ nested: pair.secretKey }, { depth: 5, showHidden: true }), JSON.stringify({ nested: pair.secretKey })]) {
    assert.ok(!shown.includes(secretBase64), shown)
    assert.ok(!shown.includes(seedPrefix), shown)
    assert.ok(shown.includes('redact-1'), shown)
  }
})

test('key files: one trailing newline is tolerated, nothing else', () => {
  const pair = generateKeyPair('k-1')
  assert.equal(parseSecretKey(pair.secretKeyText + '\n').name, 'k-1')
  assert.equal(parsePublicKey(pair.publicKeyText + '\n').toString(), pair.publicKeyText)
  for (const suffix of ['\r\n', '\n\n', ' ', '\t', '=']) {
    assert.throws(() => parseSecretKey(pair.secretKeyText + suffix), { code: 'NARWHAL_KEY_INVALID' }, JSON.stringify(suffix))
    assert.throws(() => parsePublicKey(pair.publicKeyText + suffix), { code: 'NARWHAL_KEY_INVALID' }, JSON.stringify(suffix))
  }
})

test('malformed keys throw NARWHAL_KEY_INVALID', () => {
  const pair = generateKeyPair('k-1')
  const b64 = (n: number, fill = 1): string => Buffer.alloc(n, fill).toString('base64')
  const badPublic = ['', 'k-1', `:${b64(32)}`, `k-1:${b64(31)}`, `k-1:${b64(33)}`, `k 1:${b64(32)}`,
    `k-1:${b64(32).replace(/=$/, '')}`, pair.secretKeyText, `k-1:${b64(32, 0xff)}`]
  for (const text of badPublic) {
    assert.throws(() => parsePublicKey(text), { code: 'NARWHAL_KEY_INVALID' }, text)
  }
  const secret = Buffer.from(pair.secretKeyText.slice(4), 'base64')
  const mismatched = Buffer.from(secret)
  mismatched[40] = (mismatched[40] ?? 0) ^ 1
  for (const text of ['', `k-1:${b64(63)}`, pair.publicKeyText, `:${secret.toString('base64')}`,
    `k-1:${mismatched.toString('base64')}`]) {
    assert.throws(() => parseSecretKey(text), { code: 'NARWHAL_KEY_INVALID' }, text)
  }
  assert.throws(() => generateKeyPair('bad:name'), { code: 'NARWHAL_KEY_INVALID' })
  assert.throws(() => generateKeyPair(''), { code: 'NARWHAL_KEY_INVALID' })
  assert.throws(() => generateKeyPair('has space'), { code: 'NARWHAL_KEY_INVALID' })
})

test('names split at the first colon', () => {
  const pair = generateKeyPair('host-1')
  const key = parsePublicKey(pair.publicKeyText)
  assert.equal(key.name, 'host-1')
  assert.equal(key.bytes.length, 32)
})

test('verify returns false, never throws, for malformed or foreign signatures', () => {
  const pair = generateKeyPair('k-1')
  const key = pair.secretKey.publicKey
  const good = pair.secretKey.sign(FINGERPRINT)
  const body = good.slice(4)
  for (const sig of ['', 'k-1', 'k-1:', ':' + body, 'k-2:' + body, 'k-1:' + body.slice(1), 'k-1:' + body + 'AAAA',
    'k-1:' + Buffer.alloc(64).toString('base64'), 'k-1:' + Buffer.alloc(64, 0xff).toString('base64'), 'k-1:' + body + '\n',
    // The URL-safe alphabet differs only where the signature has '+' or '/'.
    ...(/[+/]/.test(body) ? ['k-1:' + body.replace(/\+/g, '-').replace(/\//g, '_')] : [])]) {
    assert.equal(key.verify(FINGERPRINT, sig), false, sig)
  }
  assert.equal(key.verify(FINGERPRINT, good), true)
})

test('TrustedKeys: verified names, ignored strangers, forgeries under trusted names', () => {
  const a = generateKeyPair('a-1')
  const b = generateKeyPair('b-1')
  const stranger = generateKeyPair('stranger-1')
  const cacheKey = parsePublicKey(CACHE_KEY_TEXT)
  const trusted = new TrustedKeys([a.secretKey.publicKey, b.secretKey.publicKey, cacheKey, a.secretKey.publicKey])
  assert.equal(trusted.size, 3)
  assert.deepEqual(trusted.names(), ['a-1', 'b-1', 'cache.nixos.org-1'])

  const hello = parseNarInfo(readFixtureText('cache.nixos.org', 'hello-2.10.narinfo'))
  const cacheSig = hello.sigs[0] ?? ''
  const aSig = a.secretKey.sign(FINGERPRINT)
  const forgedB = 'b-1:' + stranger.secretKey.sign(FINGERPRINT).slice('stranger-1:'.length)
  const malformedB = 'b-1:not-base64'
  const result = trusted.check(FINGERPRINT, [stranger.secretKey.sign(FINGERPRINT), aSig, cacheSig, forgedB, aSig, malformedB, 'no-colon'])
  assert.deepEqual(result, { verifiedBy: ['a-1', 'cache.nixos.org-1'], forgedUnderTrustedName: [forgedB, malformedB] })
  assert.deepEqual(trusted.check(FINGERPRINT, []), { verifiedBy: [], forgedUnderTrustedName: [] })
})

test('TrustedKeys refuses two different keys with one name', () => {
  const one = generateKeyPair('same-1').secretKey.publicKey
  const two = generateKeyPair('same-1').secretKey.publicKey
  assert.throws(() => new TrustedKeys([one, two]), { code: 'NARWHAL_KEY_INVALID' })
})

test('PublicKey round-trips through its text and JSON forms', () => {
  const key = parsePublicKey(CACHE_KEY_TEXT)
  assert.equal(key.toString(), CACHE_KEY_TEXT)
  assert.equal(JSON.stringify(key), JSON.stringify(CACHE_KEY_TEXT))
  assert.equal(new PublicKey(key.name, key.bytes).toString(), CACHE_KEY_TEXT)
})
