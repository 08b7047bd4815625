/** The one pattern of a NAR file's name (src/nix/nar-url.ts), as the routes, batch parts and narinfo URLs use it. */

import { test } from 'node:test'
import assert from 'node:assert/strict'
import { NAR_FILE_PATTERN, narUrl, parseNarUrl } from '../../src/nix/nar-url.js'

const F = '1xsjkazpfgyyy38br89kz2plvdb4dkqcjl5mh0n2py3ndf0sc48j'

test('a NAR URL names a 52-char nix32 file hash and an extension Nix gives a method, nothing else', () => {
  assert.deepEqual(parseNarUrl(`nar/${F}.nar.xz`), { fileHash: F, extension: '.xz' })
  assert.deepEqual(parseNarUrl(`nar/${F}.nar`), { fileHash: F, extension: '' })
  for (const bad of [`nar/${F}.nar.gz`, `nar/${F}.nar.xz.sh`, `/nar/${F}.nar`, `nar/${F.toUpperCase()}.nar`,
    `nar/${F.slice(1)}.nar`, `nar/t${F.slice(1)}.nar`, `${F}.nar`, `nar/${F}`]) {
    assert.equal(parseNarUrl(bad), undefined, bad)
  }
})

test('narUrl writes what parseNarUrl reads, with the extension Nix writes for each method', () => {
  const cases: Array<[string, string]> = [['xz', '.xz'], ['zstd', '.zst'], ['bzip2', '.bz2'], ['br', '.br'], ['none', ''], ['gzip', '']]
  for (const [compression, extension] of cases) {
    assert.equal(narUrl(F, compression), `nar/${F}.nar${extension}`)
    assert.deepEqual(parseNarUrl(narUrl(F, compression)), { fileHash: F, extension })
  }
  assert.match(`${F}.nar.zst`, new RegExp(`^${NAR_FILE_PATTERN}$`))
})
