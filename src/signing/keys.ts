/**
 * Ed25519 signing keys in Nix's text formats, and the set of keys a cache trusts (fact sheet §6).
 *
 *   secret key file   cache-1:<base64 of 64 bytes: 32-byte seed + 32-byte public key>   (88 chars)
 *   public key        cache-1:<base64 of 32 bytes>                                       (44 chars)
 *   signature         cache-1:<base64 of 64 bytes>                                       (88 chars)
 *
 * These are the files `nix-store --generate-binary-cache-key` writes (no trailing newline) and
 * the strings `trusted-public-keys` holds, so keys move freely between narwhal and Nix. Nix signs
 * with libsodium; here @noble/ed25519 does the same RFC 8032 arithmetic for keys and signing, with
 * SHA-512 from node:crypto so the synchronous API is available.
 *
 * Verification, which the server does for every narinfo uploaded, uses node:crypto (OpenSSL): it
 * is about ten times faster than the JavaScript arithmetic (0.3 ms against 3-4.5 ms here), and it
 * checks the same equation as libsodium, Nix's library: S below the group order, and the
 * recomputed R compared byte for byte with the signature's (cofactorless). As libsodium does, a
 * key of small order is refused when it is loaded.
 */

import { createHash, createPublicKey, randomBytes, verify as verifySignature, type KeyObject } from 'node:crypto'
import * as ed from '@noble/ed25519'
import { NarwhalError } from '../errors.js'
import { encodeBase64 } from '../nix/base64.js'
import { signatureKeyName, tryParseNamedBytes, tryParseSignature } from '../nix/signature.js'

ed.hashes.sha512 = (message: Uint8Array) => Uint8Array.from(createHash('sha512').update(message).digest())

export const SECRET_KEY_BYTES = 64
export const PUBLIC_KEY_BYTES = 32
const SEED_BYTES = 32

const KEY_NAME = /^[^:\s]+$/
const INSPECT = Symbol.for('nodejs.util.inspect.custom')

/** Non-empty, no `:` (the separator) and no whitespace (`trusted-public-keys` is space-separated). */
export function isValidKeyName (name: string): boolean {
  return KEY_NAME.test(name)
}

/** The DER header of an Ed25519 SubjectPublicKeyInfo (RFC 8410), the form node:crypto loads. */
const ED25519_SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex')

export class PublicKey {
  readonly name: string
  readonly bytes: Uint8Array
  readonly #keyObject: KeyObject

  constructor (name: string, bytes: Uint8Array) {
    checkName(name, 'public key')
    if (bytes.length !== PUBLIC_KEY_BYTES) throw keyInvalid(`public key "${name}" must be ${PUBLIC_KEY_BYTES} bytes`)
    let point: ed.Point
    try {
      // A string that is not a curve point can never verify anything; say so when it is loaded.
      point = ed.Point.fromBytes(bytes)
    } catch {
      throw keyInvalid(`public key "${name}" is not an Ed25519 point`)
    }
    // Signatures under a key of small order can be made without any secret (libsodium refuses them).
    if (point.isSmallOrder()) throw keyInvalid(`public key "${name}" is a point of small order, which no real key is`)
    this.name = name
    this.bytes = Uint8Array.from(bytes)
    this.#keyObject = createPublicKey({ key: Buffer.concat([ED25519_SPKI_PREFIX, this.bytes]), format: 'der', type: 'spki' })
  }

  /** True only if `sig` is `<this name>:<base64>` and verifies over `data`. Never throws. */
  verify (data: string, sig: string): boolean {
    const parsed = tryParseSignature(sig)
    if (parsed === undefined || parsed.name !== this.name) return false
    try {
      return verifySignature(null, Buffer.from(data, 'utf8'), this.#keyObject, parsed.bytes)
    } catch {
      return false
    }
  }

  /** `name:base64`, the form `trusted-public-keys` takes. */
  toString (): string {
    return `${this.name}:${encodeBase64(this.bytes)}`
  }

  toJSON (): string {
    return this.toString()
  }
}

export class SecretKey {
  readonly name: string
  readonly publicKey: PublicKey
  /** Private so it is not enumerable, printable or serialisable. */
  readonly #seed: Uint8Array

  /** `bytes` is libsodium's 64-byte layout: seed, then public key. The two halves must agree. */
  constructor (name: string, bytes: Uint8Array) {
    checkName(name, 'secret key')
    if (bytes.length !== SECRET_KEY_BYTES) throw keyInvalid(`secret key "${name}" must be ${SECRET_KEY_BYTES} bytes`)
    const seed = Uint8Array.from(bytes.subarray(0, SEED_BYTES))
    const derived = ed.getPublicKey(seed)
    // libsodium signs with the stored public half as is; a mismatched one makes every signature
    // invalid, so refuse the key instead of producing them.
    if (!Buffer.from(derived).equals(bytes.subarray(SEED_BYTES))) {
      throw keyInvalid(`secret key "${name}" is corrupt: its public half does not match its seed`)
    }
    this.name = name
    this.#seed = seed
    this.publicKey = new PublicKey(name, derived)
  }

  /** Signs `data` (a fingerprint) and returns a narinfo `Sig` value, `name:base64`. */
  sign (data: string): string {
    return `${this.name}:${encodeBase64(ed.sign(Buffer.from(data, 'utf8'), this.#seed))}`
  }

  // Logs and error reports stringify whatever they are given; none of these show key material.
  toString (): string {
    return `SecretKey(${this.name}, public ${this.publicKey.toString()}, secret redacted)`
  }

  toJSON (): { name: string, publicKey: string, secret: string } {
    return { name: this.name, publicKey: this.publicKey.toString(), secret: '[redacted]' }
  }

  [INSPECT] (): string {
    return this.toString()
  }
}

/** Parses a secret key file's contents. One trailing `\n` is tolerated, as Nix does. */
export function parseSecretKey (text: string): SecretKey {
  const parsed = parseKeyText(text, SECRET_KEY_BYTES, 'secret key')
  try {
    return new SecretKey(parsed.name, parsed.bytes)
  } finally {
    parsed.bytes.fill(0)
  }
}

/** Parses `name:base64` of 32 bytes (one trusted-public-keys item, or a public key file). */
export function parsePublicKey (text: string): PublicKey {
  const parsed = parseKeyText(text, PUBLIC_KEY_BYTES, 'public key')
  return new PublicKey(parsed.name, parsed.bytes)
}

/** A fresh key pair; the texts are what `nix-store --generate-binary-cache-key` writes. */
export function generateKeyPair (name: string): { secretKey: SecretKey, secretKeyText: string, publicKeyText: string } {
  checkName(name, 'key')
  const seed = randomBytes(SEED_BYTES)
  const publicBytes = ed.getPublicKey(seed)
  const secretBytes = Buffer.concat([seed, publicBytes])
  const secretKey = new SecretKey(name, secretBytes)
  const secretKeyText = `${name}:${encodeBase64(secretBytes)}`
  secretBytes.fill(0)
  seed.fill(0)
  return { secretKey, secretKeyText, publicKeyText: secretKey.publicKey.toString() }
}

/** The uploader keys a cache accepts signatures from, looked up by name as Nix does. */
export class TrustedKeys {
  readonly #byName = new Map<string, PublicKey>()

  /** Two different keys under one name are refused: Nix would silently use only the first. */
  constructor (keys: readonly PublicKey[]) {
    for (const key of keys) {
      const existing = this.#byName.get(key.name)
      if (existing !== undefined && existing.toString() !== key.toString()) {
        throw keyInvalid(`two different trusted keys are named "${key.name}"`)
      }
      this.#byName.set(key.name, key)
    }
  }

  get size (): number {
    return this.#byName.size
  }

  names (): string[] {
    return [...this.#byName.keys()]
  }

  /** Each key as `name:base64`, the form nix.conf's trusted-public-keys takes. */
  publicKeys (): string[] {
    return [...this.#byName.values()].map(key => key.toString())
  }

  has (name: string): boolean {
    return this.#byName.has(name)
  }

  /**
   * Checks each `Sig` against the key of the same name. Sigs under unknown names are ignored, as
   * Nix ignores them. Returns the names whose signature verified, and the sigs under a trusted
   * name that did NOT verify (wrong bytes, or malformed): those are forgeries or corruption.
   */
  check (fingerprint: string, sigs: readonly string[]): { verifiedBy: string[], forgedUnderTrustedName: string[] } {
    const verifiedBy: string[] = []
    const forgedUnderTrustedName: string[] = []
    for (const sig of sigs) {
      const name = signatureKeyName(sig)
      const key = name === undefined ? undefined : this.#byName.get(name)
      if (key === undefined) continue
      if (key.verify(fingerprint, sig)) {
        if (!verifiedBy.includes(key.name)) verifiedBy.push(key.name)
      } else {
        forgedUnderTrustedName.push(sig)
      }
    }
    return { verifiedBy, forgedUnderTrustedName }
  }
}

function parseKeyText (text: string, size: number, what: string): { name: string, bytes: Buffer } {
  const body = text.endsWith('\n') ? text.slice(0, -1) : text
  const parsed = tryParseNamedBytes(body, size)
  if (parsed === undefined) {
    throw keyInvalid(`${what} must be "<name>:<base64 of ${size} bytes>"`)
  }
  return parsed
}

function checkName (name: string, what: string): void {
  if (!isValidKeyName(name)) throw keyInvalid(`${what} name must be non-empty, without ":" or whitespace`)
}

function keyInvalid (message: string): NarwhalError {
  return new NarwhalError('NARWHAL_KEY_INVALID', message)
}
