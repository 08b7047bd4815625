/**
 * Property-based fuzzing of the narinfo parser and formatter (src/nix/narinfo.ts).
 *
 * Properties:
 *   - any text at all, and any mangling of a valid narinfo (lines dropped, repeated, swapped,
 *     values corrupted, CRLF, huge numbers, unicode, truncation) either parses or is refused
 *     with NARWHAL_NARINFO_INVALID: never another error, never a hang (the test has a timeout);
 *     and whatever parses formats back to text that parses to the same thing
 *   - parse(format(v)) == v for every valid NarInfo value
 *   - every way of spelling a valid narinfo (field order, hash encodings, unsorted references,
 *     defaults written out, unknown keys) parses to that value and formats to Nix's canonical text
 *
 * Seed and run counts: test/fuzz/fuzz-settings.ts (FUZZ_SEED, FUZZ_SCALE).
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import fc from 'fast-check'
import { isNarwhalError } from '../../src/errors.js'
import { formatNarInfo, parseNarInfo, sortedUnique, type NarInfo } from '../../src/nix/narinfo.js'
import {
  KEYS, byteMutation, hostileValue, lineMutation, lineValue, mutateAll, mutateLines, mutateText, narInfoValue, spelledNarInfo, textMutation
} from './arbitraries.js'
import { checkProperty } from './fuzz-settings.js'

const TIMEOUT = 5 * 60 * 1000

/** The parser's verdict on `text`: a value, or the refusal it must be. Anything else fails. */
function parseOrRefuse (text: string): NarInfo | undefined {
  try {
    return parseNarInfo(text)
  } catch (err) {
    if (!isNarwhalError(err) || err.code !== 'NARWHAL_NARINFO_INVALID') {
      assert.fail(`parseNarInfo threw ${String(err)} (${(err as { code?: unknown }).code ?? 'no code'}), ` +
        `not NARWHAL_NARINFO_INVALID, for ${JSON.stringify(text.slice(0, 500))}`)
    }
    assert.ok(err.message.length > 0 && err.message.length < 1000, 'a refusal has a short message')
    return undefined
  }
}

/** What Nix's sets make of a parsed value: references and sigs sorted and de-duplicated. */
function normalised (info: NarInfo): NarInfo {
  return { ...info, references: sortedUnique(info.references), sigs: sortedUnique(info.sigs) }
}

/** Whatever parses must format, and the formatted text must mean the same and be a fixed point. */
function assertFormatsBack (info: NarInfo): void {
  const text = formatNarInfo(info)
  const again = parseNarInfo(text)
  assert.deepEqual(again, normalised(info))
  assert.equal(formatNarInfo(again), text)
}

/** A valid narinfo text, in Nix's canonical form or in one of its other spellings. */
const validText = narInfoValue.chain(info => fc.oneof(fc.constant(formatNarInfo(info)), spelledNarInfo(info)))

test('arbitrary text: parsed, or refused with NARWHAL_NARINFO_INVALID', { timeout: TIMEOUT }, async (t) => {
  const anyText = fc.oneof(
    fc.string({ unit: 'binary', maxLength: 300 }),
    fc.string({ unit: 'binary-ascii', maxLength: 300 }),
    fc.array(fc.tuple(fc.oneof(fc.constantFrom(...KEYS), lineValue(0, 12)), fc.constantFrom(': ', ':', ' '), hostileValue), { maxLength: 14 })
      .map(lines => lines.map(([k, s, v]) => `${k}${s}${v}\n`).join(''))
  )
  await checkProperty(t, fc.property(anyText, text => {
    const info = parseOrRefuse(text)
    if (info !== undefined) assertFormatsBack(info)
  }), 3000)
})

test('mangled valid narinfos: parsed and formatted back, or refused with NARWHAL_NARINFO_INVALID', { timeout: TIMEOUT }, async (t) => {
  const mangled = fc.tuple(validText, fc.array(lineMutation, { minLength: 1, maxLength: 4 }), fc.array(textMutation, { maxLength: 2 }))
    .map(([text, lineMutations, textMutations]) => textMutations.reduce(mutateText, mutateLines(text, lineMutations)))
  const byteMangled = fc.tuple(validText, fc.array(byteMutation, { minLength: 1, maxLength: 3 }))
    .map(([text, mutations]) => mutateAll(Buffer.from(text, 'utf8'), mutations).toString('utf8'))
  await checkProperty(t, fc.property(fc.oneof({ weight: 3, arbitrary: mangled }, { weight: 1, arbitrary: byteMangled }), text => {
    const info = parseOrRefuse(text)
    if (info !== undefined) assertFormatsBack(info)
  }), 3000)
})

test('parse(format(v)) == v for every valid NarInfo', { timeout: TIMEOUT }, async (t) => {
  await checkProperty(t, fc.property(narInfoValue, info => {
    const text = formatNarInfo(info)
    assert.deepEqual(parseNarInfo(text), info)
    assert.equal(formatNarInfo(parseNarInfo(text)), text)
  }), 2000)
})

test('every spelling of a valid narinfo parses to its value and formats to Nix\'s canonical text', { timeout: TIMEOUT }, async (t) => {
  const spelled = narInfoValue.chain(info => spelledNarInfo(info).map(text => ({ info, text })))
  await checkProperty(t, fc.property(spelled, ({ info, text }) => {
    const parsed = parseNarInfo(text)
    assert.deepEqual(normalised(parsed), info)
    assert.equal(formatNarInfo(parsed), formatNarInfo(info))
  }), 2000)
})
