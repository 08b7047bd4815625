/** Sizes and durations as written in configuration and flags. */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { formatBytes, parseDuration, parseSize } from '../../src/config/units.js'

test('sizes: plain bytes or K/M/G/T (binary), with an optional B or iB', () => {
  const cases: Array<[string, number]> = [
    ['0', 0], ['1234', 1234], ['1234B', 1234], ['500M', 500 * 1024 ** 2], ['20G', 20 * 1024 ** 3], ['1T', 1024 ** 4],
    ['1.5G', 1.5 * 1024 ** 3], ['64k', 65536], ['2GiB', 2 * 1024 ** 3], ['2GB', 2 * 1024 ** 3], [' 7M ', 7 * 1024 ** 2]
  ]
  for (const [text, bytes] of cases) assert.equal(parseSize(text), bytes, text)
  for (const text of ['', 'G', '-1', '1P', '1 G', '1iB', 'ten', '1e3', '99999999999T']) assert.equal(parseSize(text), undefined, text)
})

test('durations: a whole number of s, m, h, d or w; "0" is zero', () => {
  const cases: Array<[string, number]> = [
    ['0', 0], ['30s', 30_000], ['90m', 5_400_000], ['12h', 43_200_000], ['30d', 2_592_000_000], ['2w', 1_209_600_000]
  ]
  for (const [text, ms] of cases) assert.equal(parseDuration(text), ms, text)
  for (const text of ['', '30', '1.5h', '1y', '-1d', 'h', '1 d', '1D']) assert.equal(parseDuration(text), undefined, text)
})

test('formatBytes picks a binary unit', () => {
  assert.equal(formatBytes(0), '0 bytes')
  assert.equal(formatBytes(1023), '1023 bytes')
  assert.equal(formatBytes(1536), '1.5 KiB')
  assert.equal(formatBytes(20 * 1024 ** 3), '20.0 GiB')
})
