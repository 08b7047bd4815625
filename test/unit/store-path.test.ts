/**
 * Store path syntax: the rules of Nix 2.8 plus master's (a "-" after the hash, no "." names).
 */

import { test } from 'node:test'
import assert from 'node:assert/strict'
import {
  FILE_HASH_PATTERN, HASH_PART_PATTERN, isValidHashPart, isValidStorePathName, parseStorePath,
  parseStorePathBaseName, STORE_DIR
} from '../../src/nix/store-path.js'

const HASH = 'xcp9cav49dmsjbwdjlmkjxj10gkpx553'

test('valid names, including + = ? and the 211-character maximum', () => {
  for (const name of ['hello-2.10', 'a', 'foo+bar', 'x=y', 'x?y', 'A_B.C-d', '.hidden', '..x', '-', 'a'.repeat(211)]) {
    assert.ok(isValidStorePathName(name), name)
  }
})

test('invalid names', () => {
  for (const name of ['', '.', '..', '.-x', '..-x', 'a'.repeat(212), 'a/b', 'a b', 'é', 'a\n', 'a:b', 'a@b']) {
    assert.equal(isValidStorePathName(name), false, JSON.stringify(name))
  }
})

test('hash parts are 32 lowercase nix32 characters', () => {
  assert.ok(isValidHashPart(HASH))
  assert.equal(isValidHashPart(HASH.toUpperCase()), false)
  assert.equal(isValidHashPart(HASH.slice(1)), false)
  assert.equal(isValidHashPart('e' + HASH.slice(1)), false)
  assert.equal(isValidHashPart(HASH + '0'), false)
})

test('the exported patterns are the nix32 alphabet', () => {
  assert.ok(new RegExp(`^${HASH_PART_PATTERN}$`).test(HASH))
  assert.ok(new RegExp(`^${FILE_HASH_PATTERN}$`).test('0nqgf15qfiacfxrgm2wkw0gwwncjqqzzalj8rs14w9srkydkjsk9'))
  for (const c of 'eout') assert.equal(new RegExp(HASH_PART_PATTERN).test(c.repeat(32)), false)
})

test('parseStorePathBaseName and parseStorePath split a path', () => {
  assert.deepEqual(parseStorePathBaseName(`${HASH}-hello-2.10`, 'f'), { hashPart: HASH, name: 'hello-2.10' })
  assert.deepEqual(parseStorePath(`${STORE_DIR}/${HASH}-hello-2.10`, 'f'),
    { hashPart: HASH, name: 'hello-2.10', baseName: `${HASH}-hello-2.10` })
})

test('malformed paths throw, naming the field', () => {
  for (const bad of [
    `${HASH}hello`, `${HASH}-`, `${HASH}`, `${HASH.slice(1)}-hello`, `${HASH.toUpperCase()}-hello`, `${HASH}-a/b`
  ]) {
    assert.throws(() => parseStorePathBaseName(bad, 'narinfo field References', 'NARWHAL_NARINFO_INVALID'),
      { code: 'NARWHAL_NARINFO_INVALID', message: /^narinfo field References: / }, bad)
  }
  for (const bad of [
    `/gnu/store/${HASH}-hello`, `/nix/store//${HASH}-hello`, `/nix/store/./${HASH}-hello`, `nix/store/${HASH}-hello`,
    `${HASH}-hello`, `/nix/store/${HASH}-hello/bin`, '/nix/store/'
  ]) {
    assert.throws(() => parseStorePath(bad, 'StorePath'), { code: 'NARWHAL_BAD_REQUEST', message: /^StorePath: / }, bad)
  }
})
