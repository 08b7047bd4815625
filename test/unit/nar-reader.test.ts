/**
 * The streaming NAR validator and the `.ls` listing, on real NARs from `nix-store --dump` and on
 * hand-broken ones. Fixtures: test/fixtures/nar (see make-fixtures.sh there).
 */

import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { NarListing } from '../../src/nix/nar-listing.js'
import { MAX_DEPTH, NarReader, type NarEntry } from '../../src/nix/nar-reader.js'
import { encodeNix32 } from '../../src/nix/nix32.js'
import { makeTempDir, nar, narNode, readFixture, readFixtureText, runNix, runNixBinary, str, type TreeNode } from './nix-test-helpers.js'

const FIXTURES = ['tree', 'sorting', 'file', 'exec', 'symlink', 'empty-dir']

interface ReadResult { entries: NarEntry[], bytesRead: bigint, listing: string }

/** Feeds `bytes` in chunks of `chunkSize` (or in one piece) and returns what the reader saw. */
function readNar (bytes: Uint8Array, chunkSize = bytes.length || 1): ReadResult {
  const entries: NarEntry[] = []
  const listing = new NarListing()
  const reader = new NarReader({ onEntry: e => { entries.push(e); listing.add(e) } })
  for (let i = 0; i < bytes.length; i += chunkSize) reader.write(bytes.subarray(i, i + chunkSize))
  reader.end()
  return { entries, bytesRead: reader.bytesRead, listing: listing.toString() }
}

function assertMalformed (bytes: Uint8Array, message: RegExp, why: string): void {
  assert.throws(() => readNar(bytes), (err: unknown) => {
    assert.ok(err instanceof Error, why)
    assert.equal((err as { code?: string }).code, 'NARWHAL_NAR_MALFORMED', why)
    assert.match(err.message, message, why)
    return true
  }, why)
}

const TREE = readFixture('nar', 'tree.nar')

test('real NARs from nix-store --dump: hash, size and Nix\'s own .ls listing', () => {
  for (const name of FIXTURES) {
    const bytes = readFixture('nar', `${name}.nar`)
    assert.equal(encodeNix32(createHash('sha256').update(bytes).digest()), readFixtureText('nar', `${name}.nar.sha256`).trim(), name)
    const result = readNar(bytes)
    assert.equal(result.bytesRead, BigInt(bytes.length), name)
    assert.equal(result.listing, readFixtureText('nar', `${name}.ls`), name)
  }
})

test('tree.nar reports every node in NAR order with Nix\'s narOffsets', () => {
  assert.deepEqual(readNar(TREE).entries, [
    { path: '', type: 'directory' },
    { path: 'a', type: 'regular', size: 3n, executable: false, narOffset: 232n },
    { path: 'empty', type: 'regular', size: 0n, executable: false, narOffset: 424n },
    { path: 'emptydir', type: 'directory' },
    { path: 'link', type: 'symlink', target: 'a' },
    { path: 'sub', type: 'directory' },
    { path: 'sub/deeper', type: 'directory' },
    { path: 'sub/deeper/up', type: 'symlink', target: '../a' },
    { path: 'sub/z', type: 'regular', size: 2n, executable: false, narOffset: 1464n },
    { path: 'x', type: 'regular', size: 18n, executable: true, narOffset: 1720n }
  ])
})

test('chunk boundaries do not matter: one byte at a time and odd chunk sizes give the same result', () => {
  const whole = readNar(TREE)
  for (const size of [1, 2, 3, 5, 7, 8, 9, 13, 64, 1000]) {
    assert.deepEqual(readNar(TREE, size), whole, `chunk size ${size}`)
  }
})

test('the test NAR writer reproduces nix-store --dump byte for byte', () => {
  const tree: TreeNode = {
    type: 'directory',
    entries: [
      ['a', { type: 'regular', contents: 'hi\n' }],
      ['empty', { type: 'regular', contents: '' }],
      ['emptydir', { type: 'directory', entries: [] }],
      ['link', { type: 'symlink', target: 'a' }],
      ['sub', {
        type: 'directory',
        entries: [
          ['deeper', { type: 'directory', entries: [['up', { type: 'symlink', target: '../a' }]] }],
          ['z', { type: 'regular', contents: 'z\n' }]
        ]
      }],
      ['x', { type: 'regular', contents: '#!/bin/sh\necho ok\n', executable: true }]
    ]
  }
  assert.deepEqual(nar(tree), TREE)
})

test('a fresh nix-store --dump: sizes, long names and targets, an 8-aligned and a 1 MiB file', () => {
  const { dir, cleanup } = makeTempDir()
  try {
    const root = path.join(dir, 'root')
    mkdirSync(path.join(root, 'd'.repeat(255)), { recursive: true })
    writeFileSync(path.join(root, 'd'.repeat(255), 'eight'), '12345678')
    writeFileSync(path.join(root, 'big'), Buffer.alloc(1024 * 1024 + 3, 0xab))
    symlinkSync('t'.repeat(4095), path.join(root, 'long-target'))
    writeFileSync(path.join(root, 'Ünïcode name'), 'x')
    const narFile = path.join(dir, 'root.nar')
    writeFileSync(narFile, runNixBinary('nix-store', ['--dump', root], dir))
    const bytes = readFileSync(narFile)
    const result = readNar(bytes, 65536)
    assert.equal(result.bytesRead, BigInt(bytes.length))
    assert.equal(encodeNix32(createHash('sha256').update(bytes).digest()),
      runNix('nix-hash', ['--type', 'sha256', '--flat', '--base32', narFile], dir).trim())
    const nixListing = runNix('nix', ['nar', 'ls', '--json', '-R', narFile, '/'], dir)
    assert.equal(result.listing, `{"version":1,"root":${nixListing}}`)
  } finally {
    cleanup()
  }
})

test('a NAR truncated at any offset is refused by end(), and every prefix is accepted by write()', () => {
  for (let cut = 0; cut < TREE.length; cut++) {
    const reader = new NarReader()
    reader.write(TREE.subarray(0, cut))
    assert.throws(() => reader.end(), { code: 'NARWHAL_NAR_MALFORMED', message: /truncated/ }, `cut at ${cut}`)
  }
})

test('wrong magic', () => {
  const rest = narNode({ type: 'regular', contents: 'x' })
  assertMalformed(Buffer.concat([str('nix-archive-2'), rest]), /not a Nix archive/, 'nix-archive-2')
  assertMalformed(Buffer.concat([str('nix-archive-10'), rest]), /not a Nix archive/, 'longer magic')
  assertMalformed(Buffer.concat([str('NIX-ARCHIVE-1'), rest]), /not a Nix archive/, 'uppercase')
  assertMalformed(Buffer.from('\x1f\x8b\x08\x00\x00\x00\x00\x00 gzip, not a NAR'), /not a Nix archive/, 'gzip')
  assertMalformed(rest, /not a Nix archive/, 'no magic at all')
})

test('directory entries must be strictly sorted by name, byte-wise', () => {
  const file: TreeNode = { type: 'regular', contents: '' }
  assertMalformed(nar({ type: 'directory', entries: [['b', file], ['a', file]] }), /not strictly sorted/, 'b before a')
  assertMalformed(nar({ type: 'directory', entries: [['a', file], ['a', file]] }), /not strictly sorted/, 'duplicate')
  assertMalformed(nar({ type: 'directory', entries: [['a', file], ['B', file]] }), /not strictly sorted/, 'locale order')
  assert.ok(readNar(nar({ type: 'directory', entries: [['B', file], ['a', file], ['é', file]] })))
})

test('entry names must not be empty, ".", "..", or contain "/" or NUL', () => {
  const file: TreeNode = { type: 'regular', contents: 'x' }
  for (const name of ['', '.', '..', 'a/b', '/', 'a\0b']) {
    assertMalformed(nar({ type: 'directory', entries: [[name, file]] }), /invalid entry name|expected an entry name/, JSON.stringify(name))
  }
  assertMalformed(nar({ type: 'directory', entries: [['n'.repeat(256), file]] }), /entry name of 1-255 bytes/, '256-byte name')
})

test('padding must be zero, in tokens and after file contents', () => {
  for (const offset of [
    0x34, // after "type"
    0xeb // after the 3 bytes of a's contents
  ]) {
    const bad = Buffer.from(TREE)
    bad[offset] = 1
    assertMalformed(bad, new RegExp(`non-zero padding byte at ${offset}`), `offset ${offset}`)
  }
})

test('nothing may follow the root node', () => {
  for (const extra of [Buffer.from([0]), Buffer.alloc(8), TREE]) {
    assertMalformed(Buffer.concat([TREE, extra]), new RegExp(`after the end of the archive at byte ${TREE.length}`), `${extra.length} bytes`)
  }
})

test('the grammar is the canonical one nix-store --dump writes', () => {
  const magic = str('nix-archive-1')
  const cases: Array<[string, Buffer[]]> = [
    ['unknown type', [str('('), str('type'), str('fifo'), str(')')]],
    ['executable with a value', [str('('), str('type'), str('regular'), str('executable'), str('1'), str('contents'), str('x'), str(')')]],
    ['regular without contents', [str('('), str('type'), str('regular'), str(')')]],
    ['executable after contents', [str('('), str('type'), str('regular'), str('contents'), str('x'), str('executable'), str(''), str(')')]],
    ['two types', [str('('), str('type'), str('type'), str('regular')]],
    ['no open tag', [str('type'), str('regular')]],
    ['symlink without target', [str('('), str('type'), str('symlink'), str(')')]],
    ['empty symlink target', [str('('), str('type'), str('symlink'), str('target'), str(''), str(')')]],
    ['NUL in symlink target', [str('('), str('type'), str('symlink'), str('target'), str('a\0b'), str(')')]],
    ['entry without name', [str('('), str('type'), str('directory'), str('entry'), str('('), str('node')]],
    ['unknown directory field', [str('('), str('type'), str('directory'), str('contents'), str('x'), str(')')]],
    ['target too long', [str('('), str('type'), str('symlink'), str('target'), str('t'.repeat(4097)), str(')')]]
  ]
  for (const [why, parts] of cases) {
    assertMalformed(Buffer.concat([magic, ...parts]), /malformed NAR: expected .* at byte \d+/, why)
  }
})

test('a bogus token length fails after its 8 bytes, before any data is awaited', () => {
  const reader = new NarReader()
  const length = Buffer.alloc(8)
  length.writeBigUInt64LE(1n << 40n)
  reader.write(Buffer.concat([str('nix-archive-1'), str('('), str('type')]))
  assert.throws(() => reader.write(length), { code: 'NARWHAL_NAR_MALFORMED', message: /found a string of 1099511627776 bytes/ })
})

test('a file size beyond 2^53-1 is refused', () => {
  const length = Buffer.alloc(8)
  length.writeBigUInt64LE((1n << 64n) - 1n)
  const head = Buffer.concat([str('nix-archive-1'), str('('), str('type'), str('regular'), str('contents'), length])
  assert.throws(() => new NarReader().write(head), { code: 'NARWHAL_NAR_MALFORMED', message: /more than 2\^53-1/ })
})

test(`directories may nest ${MAX_DEPTH} deep, not deeper`, () => {
  const nest = (depth: number): TreeNode => depth === 1
    ? { type: 'directory', entries: [] }
    : { type: 'directory', entries: [['d', nest(depth - 1)]] }
  const ok = readNar(nar(nest(MAX_DEPTH)))
  assert.equal(ok.entries.at(-1)?.path, Array(MAX_DEPTH - 1).fill('d').join('/'))
  assertMalformed(nar(nest(MAX_DEPTH + 1)), /nest deeper than 256/, 'too deep')
})

test('a file over 4 GiB streams through in constant memory', () => {
  const size = 5 * 1024 ** 3 + 3 // odd, so 5 bytes of padding follow
  const entries: NarEntry[] = []
  const reader = new NarReader({ onEntry: e => entries.push(e) })
  const head = Buffer.concat([str('nix-archive-1'), str('('), str('type'), str('regular'), str('executable'), str(''), str('contents')])
  const length = Buffer.alloc(8)
  length.writeBigUInt64LE(BigInt(size))
  reader.write(head)
  reader.write(length)
  const chunk = Buffer.alloc(64 * 1024 * 1024) // reused: the reader must not keep it
  let left = size
  while (left > 0) {
    const n = Math.min(left, chunk.length)
    reader.write(chunk.subarray(0, n))
    left -= n
  }
  reader.write(Buffer.concat([Buffer.alloc(5), str(')')]))
  reader.end()
  assert.deepEqual(entries, [{
    path: '', type: 'regular', size: BigInt(size), executable: true, narOffset: BigInt(head.length + 8)
  }])
  assert.equal(reader.bytesRead, BigInt(head.length + 8 + size + 5 + 16))
})

test('after an error every call repeats it; an empty input is truncated', () => {
  const reader = new NarReader()
  assert.throws(() => reader.write(Buffer.from('garbage!garbage!')), { code: 'NARWHAL_NAR_MALFORMED' })
  assert.throws(() => reader.write(TREE), { message: /not a Nix archive/ })
  assert.throws(() => reader.end(), { message: /not a Nix archive/ })
  assert.throws(() => new NarReader().end(), { code: 'NARWHAL_NAR_MALFORMED', message: /ends at byte 0/ })
})

test('the listing keeps byte order for names a JS object would reorder', () => {
  const listing = readNar(readFixture('nar', 'sorting.nar')).listing
  assert.ok(listing.indexOf('"10"') < listing.indexOf('"2"'))
  assert.ok(listing.indexOf('"B"') < listing.indexOf('"a"'))
})
