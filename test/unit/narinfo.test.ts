/**
 * narinfo parsing and formatting: real files from Nix 2.8 and cache.nixos.org round-trip, and
 * every rule the parser enforces has a test that breaks it.
 */

import { test } from 'node:test'
import assert from 'node:assert/strict'
import { formatNarInfo, parseNarInfo, type NarInfo } from '../../src/nix/narinfo.js'
import { readFixtureText } from './nix-test-helpers.js'

const DEP_A = readFixtureText('narinfo', 'nix-copy-dep-a.narinfo')
const TREE_CA = readFixtureText('narinfo', 'nix-copy-tree-ca.narinfo')
const HELLO = readFixtureText('cache.nixos.org', 'hello-2.10.narinfo')

const SIG = 'test-1:+90c4jUxKEZ+D9XJmlJqJcBvCk/NBd430JQF52L/rwMQwfCnAbZmjxgmFajhXlh3k15eAsl4YqA1NzY21Yd4CQ=='
const NAR_HASH = 'sha256:00kjynz8n03652qccs76ivsvark3pr3dfr6w1ba3x7bx83kcknvv'

/** Replaces the line starting `key: ` in `text` (or appends when absent). */
function withField (text: string, key: string, value: string | null): string {
  const lines = text.split('\n').slice(0, -1)
  const index = lines.findIndex(l => l.startsWith(`${key}: `))
  if (value === null) {
    if (index >= 0) lines.splice(index, 1)
  } else if (index >= 0) {
    lines[index] = `${key}: ${value}`
  } else {
    lines.push(`${key}: ${value}`)
  }
  return lines.join('\n') + '\n'
}

function assertInvalid (text: string, field: string | RegExp, why: string): void {
  assert.throws(() => parseNarInfo(text), (err: unknown) => {
    assert.ok(err instanceof Error, why)
    assert.equal((err as { code?: string }).code, 'NARWHAL_NARINFO_INVALID', why)
    if (typeof field === 'string') {
      assert.ok(err.message.startsWith(`narinfo field ${field}: `), `${why}: message was ${err.message}`)
    } else {
      assert.match(err.message, field, why)
    }
    return true
  }, why)
}

test('the narinfo nix copy sent round-trips byte for byte', () => {
  const info = parseNarInfo(DEP_A)
  assert.deepEqual(info, {
    storePath: '/nix/store/m6w0ra3ns1bjzrazws3m2m2gn9z4rlng-dep-a',
    url: 'nar/1xsjkazpfgyyy38br89kz2plvdb4dkqcjl5mh0n2py3ndf0sc48j.nar.xz',
    compression: 'xz',
    fileHash: info.fileHash,
    fileSize: 128n,
    narHash: info.narHash,
    narSize: 120n,
    references: [],
    deriver: '6091y2lwc4f6xknmiym1kaix9cxkw1y5-dep-a.drv',
    sigs: [SIG]
  } satisfies NarInfo)
  assert.equal(info.fileHash?.length, 32)
  assert.equal(info.narHash.length, 32)
  assert.ok(DEP_A.includes('References: \n'))
  assert.equal(formatNarInfo(info), DEP_A)
})

test('a content-addressed narinfo from nix copy round-trips byte for byte', () => {
  const info = parseNarInfo(TREE_CA)
  assert.equal(info.ca, 'fixed:r:sha256:0p4g10gbcfbai4cdz5509rps0c9j2wfc9fw2ihxcxj0n9w9fr75j')
  assert.equal(info.compression, 'none')
  assert.equal(info.deriver, undefined)
  assert.deepEqual(info.sigs, [])
  assert.equal(formatNarInfo(info), TREE_CA)
})

test('the cache.nixos.org narinfo with a hex NarHash parses and formats as nix32', () => {
  const info = parseNarInfo(HELLO)
  assert.equal(info.narHash.toString('hex'), '91e129ac1959d062ad093d2b1f8b65afae0f712056fe3eac78ec530ff6a1bb9a')
  assert.equal(info.narSize, 206104n)
  assert.equal(info.fileSize, 41104n)
  assert.deepEqual(info.references, [
    '563528481rvhc5kxwipjmg6rqrl95mdx-glibc-2.33-56', 'xcp9cav49dmsjbwdjlmkjxj10gkpx553-hello-2.10'
  ])
  assert.equal(info.deriver, 'vvb4wxmnjixmrkhmj2xb75z62hrr41i7-hello-2.10.drv')
  assert.equal(formatNarInfo(info), withField(HELLO, 'NarHash', 'sha256:16mvl7v0ylzcg2n3xzjn41qhzbmgcn5iyarx16nn5l2r36n2kqci'))
})

test('field order is free and unknown keys, including System, are ignored', () => {
  const lines = DEP_A.split('\n').slice(0, -1).reverse()
  const text = ['System: x86_64-linux', 'X-Future: anything: at all', ...lines].join('\n') + '\n'
  assert.equal(formatNarInfo(parseNarInfo(text)), DEP_A)
})

test('absent or empty Compression means bzip2', () => {
  assert.equal(parseNarInfo(withField(DEP_A, 'Compression', null)).compression, 'bzip2')
  assert.equal(parseNarInfo(withField(DEP_A, 'Compression', '')).compression, 'bzip2')
  assert.equal(parseNarInfo(withField(DEP_A, 'Compression', 'zstd')).compression, 'zstd')
})

test('optional fields may be absent', () => {
  let text = DEP_A
  for (const key of ['FileHash', 'FileSize', 'References', 'Deriver', 'Sig']) text = withField(text, key, null)
  const info = parseNarInfo(text)
  assert.equal(info.fileHash, undefined)
  assert.equal(info.fileSize, undefined)
  assert.equal(info.deriver, undefined)
  assert.deepEqual(info.references, [])
  assert.deepEqual(info.sigs, [])
  // Nix always writes References, so formatting adds the line back.
  assert.equal(formatNarInfo(info), text.replace('NarSize: 120\n', 'NarSize: 120\nReferences: \n'))
})

test('Deriver unknown-deriver parses to undefined', () => {
  assert.equal(parseNarInfo(withField(DEP_A, 'Deriver', 'unknown-deriver')).deriver, undefined)
})

test('NarHash and FileHash accept every spelling Nix accepts', () => {
  const hex = '91e129ac1959d062ad093d2b1f8b65afae0f712056fe3eac78ec530ff6a1bb9a'
  const b64 = Buffer.from(hex, 'hex').toString('base64')
  for (const h of [`sha256:${hex}`, `sha256:${hex.toUpperCase()}`, `sha256:${b64}`, `sha256-${b64}`]) {
    assert.equal(parseNarInfo(withField(DEP_A, 'NarHash', h)).narHash.toString('hex'), hex, h)
    assert.equal(parseNarInfo(withField(DEP_A, 'FileHash', h)).fileHash?.toString('hex'), hex, h)
  }
})

test('NarSize and FileSize are u64: the maximum parses, FileSize may be 0', () => {
  assert.equal(parseNarInfo(withField(DEP_A, 'NarSize', '18446744073709551615')).narSize, (1n << 64n) - 1n)
  assert.equal(parseNarInfo(withField(DEP_A, 'NarSize', '5000000000')).narSize, 5_000_000_000n)
  assert.equal(parseNarInfo(withField(DEP_A, 'FileSize', '0')).fileSize, 0n)
})

test('References keep their order when parsed and are written sorted and de-duplicated', () => {
  const refs = ['xcp9cav49dmsjbwdjlmkjxj10gkpx553-hello-2.10', '563528481rvhc5kxwipjmg6rqrl95mdx-glibc-2.33-56']
  const info = parseNarInfo(withField(DEP_A, 'References', [...refs, refs[0]].join(' ')))
  assert.deepEqual(info.references, [...refs, refs[0]])
  assert.match(formatNarInfo(info), new RegExp(`\nReferences: ${refs[1]} ${refs[0]}\n`))
})

test('References are split on spaces like Nix does, so extra spaces are harmless', () => {
  const refs = ['xcp9cav49dmsjbwdjlmkjxj10gkpx553-hello-2.10', '563528481rvhc5kxwipjmg6rqrl95mdx-glibc-2.33-56']
  assert.deepEqual(parseNarInfo(withField(DEP_A, 'References', ` ${refs[0]}  ${refs[1]} `)).references, refs)
  assert.deepEqual(parseNarInfo(withField(DEP_A, 'References', '   ')).references, [])
})

test('Sig may repeat; written sorted and de-duplicated', () => {
  const other = 'a-key:' + Buffer.alloc(64, 7).toString('base64')
  const text = DEP_A + `Sig: ${other}\nSig: ${SIG}\n`
  const info = parseNarInfo(text)
  assert.deepEqual(info.sigs, [SIG, other, SIG])
  assert.ok(formatNarInfo(info).endsWith(`Sig: ${other}\nSig: ${SIG}\n`))
})

test('CA accepts the forms Nix 2.8 parses; empty CA means none', () => {
  const nix32 = '0p4g10gbcfbai4cdz5509rps0c9j2wfc9fw2ihxcxj0n9w9fr75j'
  for (const ca of [`fixed:r:sha256:${nix32}`, `fixed:sha256:${nix32}`, `text:sha256:${nix32}`,
    'fixed:sha1:' + '0'.repeat(40), 'fixed:r:md5:' + '0'.repeat(32), 'fixed:sha512:' + '0'.repeat(128)]) {
    assert.equal(parseNarInfo(withField(DEP_A, 'CA', ca)).ca, ca)
  }
  assert.equal(parseNarInfo(withField(DEP_A, 'CA', '')).ca, undefined)
})

test('rejects CRLF, a missing final newline and lines that are not "Key: value"', () => {
  assertInvalid(DEP_A.replace(/\n/g, '\r\n'), /^narinfo: contains "\\r"/, 'CRLF')
  assertInvalid(DEP_A.replace('Compression: xz', 'Compression: xz\r'), /^narinfo: /, 'one CR')
  assertInvalid(DEP_A.slice(0, -1), /^narinfo: the last line/, 'no final newline')
  assertInvalid('', /^narinfo: the last line/, 'empty file')
  assertInvalid('\n', /^narinfo line 1: /, 'just a newline')
  assertInvalid(DEP_A.replace('Compression: xz', 'Compression:xz'), /^narinfo line 3: /, 'no space')
  assertInvalid(DEP_A.replace('Compression: xz', 'Compression:'), /^narinfo line 3: /, 'no value, no space')
  assertInvalid(DEP_A.replace('Compression: xz', 'Compression xz'), /^narinfo line 3: /, 'no colon')
  assertInvalid(DEP_A + '\n', /^narinfo line 11: /, 'blank line')
  assertInvalid(DEP_A + ': value\n', /^narinfo line 11: /, 'empty key')
})

test('rejects every single-valued field given twice', () => {
  const extra: Record<string, string> = {
    StorePath: '/nix/store/m6w0ra3ns1bjzrazws3m2m2gn9z4rlng-dep-a',
    URL: 'nar/x.nar',
    Compression: 'xz',
    FileHash: NAR_HASH,
    FileSize: '128',
    NarHash: NAR_HASH,
    NarSize: '120',
    References: '',
    Deriver: 'unknown-deriver',
    CA: 'fixed:r:sha256:0p4g10gbcfbai4cdz5509rps0c9j2wfc9fw2ihxcxj0n9w9fr75j'
  }
  for (const [key, value] of Object.entries(extra)) {
    const once = ('\n' + DEP_A).includes(`\n${key}: `) ? DEP_A : DEP_A + `${key}: ${value}\n`
    assertInvalid(once + `${key}: ${value}\n`, key, `${key} twice`)
  }
})

test('rejects missing required fields and an empty URL', () => {
  for (const key of ['StorePath', 'URL', 'NarHash', 'NarSize']) {
    assertInvalid(withField(DEP_A, key, null), key, `missing ${key}`)
  }
  assertInvalid(withField(DEP_A, 'URL', ''), 'URL', 'empty URL')
})

test('rejects a NarSize that is 0, not canonical decimal, or over 2^64-1', () => {
  for (const bad of ['0', '', '-1', '+120', ' 120', '120 ', '0x78', '1e3', '12a', '0120', '١٢٠',
    '18446744073709551616', '99999999999999999999999']) {
    assertInvalid(withField(DEP_A, 'NarSize', bad), 'NarSize', `NarSize ${JSON.stringify(bad)}`)
  }
  assert.throws(() => parseNarInfo(withField(DEP_A, 'NarSize', '0')), { message: 'narinfo field NarSize: must be a positive decimal integer' })
})

test('rejects a FileSize that is not canonical decimal', () => {
  for (const bad of ['', '-1', '+1', '12a', '01', '18446744073709551616']) {
    assertInvalid(withField(DEP_A, 'FileSize', bad), 'FileSize', `FileSize ${JSON.stringify(bad)}`)
  }
})

test('rejects invalid store paths', () => {
  for (const bad of [
    '/gnu/store/m6w0ra3ns1bjzrazws3m2m2gn9z4rlng-dep-a', 'm6w0ra3ns1bjzrazws3m2m2gn9z4rlng-dep-a',
    '/nix/store/m6w0ra3ns1bjzrazws3m2m2gn9z4rlng', '/nix/store/m6w0ra3ns1bjzrazws3m2m2gn9z4rlnge-dep-a',
    '/nix/store/M6W0RA3NS1BJZRAZWS3M2M2GN9Z4RLNG-dep-a', '/nix/store/m6w0ra3ns1bjzrazws3m2m2gn9z4rlng-dep a',
    '/nix/store/m6w0ra3ns1bjzrazws3m2m2gn9z4rlng-..', '/nix/store/m6w0ra3ns1bjzrazws3m2m2gn9z4rlng-dep-a/bin', ''
  ]) {
    assertInvalid(withField(DEP_A, 'StorePath', bad), 'StorePath', `StorePath ${bad}`)
  }
})

test('rejects invalid references', () => {
  for (const bad of [
    '/nix/store/m6w0ra3ns1bjzrazws3m2m2gn9z4rlng-dep-a', 'm6w0ra3ns1bjzrazws3m2m2gn9z4rlng',
    'm6w0ra3ns1bjzrazws3m2m2gn9z4rlng-dep-a,xcp9cav49dmsjbwdjlmkjxj10gkpx553-hello-2.10', 'not-a-path'
  ]) {
    assertInvalid(withField(DEP_A, 'References', bad), 'References', `References ${bad}`)
  }
})

test('rejects a Deriver that is not a .drv base name or "unknown-deriver"', () => {
  for (const bad of ['', '6091y2lwc4f6xknmiym1kaix9cxkw1y5-dep-a', '/nix/store/6091y2lwc4f6xknmiym1kaix9cxkw1y5-dep-a.drv',
    'unknown', 'Unknown-deriver', '6091y2lwc4f6xknmiym1kaix9cxkw1y5.drv']) {
    assertInvalid(withField(DEP_A, 'Deriver', bad), 'Deriver', `Deriver ${JSON.stringify(bad)}`)
  }
})

test('rejects a Sig that is not name:base64 of 64 bytes', () => {
  const b64 = (n: number): string => Buffer.alloc(n, 1).toString('base64')
  for (const bad of ['', 'no-colon', `:${b64(64)}`, `k:${b64(63)}`, `k:${b64(65)}`, 'k:', `k:${b64(64).slice(0, -2)}`,
    `k:${b64(64).replace(/=+$/, '')}`, `k:${b64(64)} `, `k: ${b64(64)}`, `k:${b64(64).replace(/A/g, '-')}`]) {
    assertInvalid(withField(DEP_A, 'Sig', bad), 'Sig', `Sig ${JSON.stringify(bad)}`)
  }
})

test('rejects a NarHash or FileHash that is not SHA-256', () => {
  for (const key of ['NarHash', 'FileHash']) {
    for (const bad of ['00kjynz8n03652qccs76ivsvark3pr3dfr6w1ba3x7bx83kcknvv', 'md5:' + '0'.repeat(32),
      'sha1:' + '0'.repeat(40), 'sha512:' + '0'.repeat(128), 'sha256:' + '0'.repeat(63), '']) {
      assertInvalid(withField(DEP_A, key, bad), key, `${key} ${bad}`)
    }
  }
})

test('rejects a CA Nix 2.8 could not parse', () => {
  for (const bad of ['fixed', 'fixed:r:sha256', 'fixed:r:sha256:xyz', 'sha256:' + '0'.repeat(64),
    'text:sha1:' + '0'.repeat(40), 'fixed:r:sha256:' + '0'.repeat(63), 'nar:sha256:' + '0'.repeat(64)]) {
    assertInvalid(withField(DEP_A, 'CA', bad), 'CA', `CA ${bad}`)
  }
})

test('rejects input over 1 MiB or over 10,000 lines', () => {
  assertInvalid(DEP_A + `X-Pad: ${'x'.repeat(1024 * 1024)}\n`, /^narinfo: larger than 1 MiB/, 'size')
  assertInvalid(DEP_A + 'X: y\n'.repeat(10_000), /^narinfo: more than 10000 lines/, 'lines')
  // Exactly at the line limit is fine.
  const lineCount = DEP_A.split('\n').length - 1
  assert.ok(parseNarInfo(DEP_A + 'X: y\n'.repeat(10_000 - lineCount)))
})

test('formatNarInfo refuses values that would inject lines or break the rules', () => {
  const info = parseNarInfo(DEP_A)
  assert.throws(() => formatNarInfo({ ...info, url: 'nar/x.nar\nStorePath: /nix/store/xcp9cav49dmsjbwdjlmkjxj10gkpx553-hello-2.10' }),
    { code: 'NARWHAL_NARINFO_INVALID' })
  assert.throws(() => formatNarInfo({ ...info, narSize: 0n }), { code: 'NARWHAL_NARINFO_INVALID' })
  assert.throws(() => formatNarInfo({ ...info, sigs: ['bogus'] }), { code: 'NARWHAL_NARINFO_INVALID' })
})
