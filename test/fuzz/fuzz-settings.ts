/**
 * One place for how much and with what seed the fuzz tests (test/fuzz/*.test.ts) run.
 *
 * CI runs a fixed seed, so a red build can be reproduced; to explore further:
 *
 *   FUZZ_SEED=12345 node --test dist/test/fuzz/        another fixed seed
 *   FUZZ_SEED=random node --test dist/test/fuzz/       a new seed per run (printed on failure)
 *   FUZZ_SCALE=10 node --test dist/test/fuzz/          ten times the runs of every property
 *
 * On a failure fast-check prints the seed, the path to the failing case and the shrunk input;
 * FUZZ_SEED=<that seed> replays it. FUZZ_PATH=<that path>, with the same seed and
 * --test-name-pattern selecting the one failing test, jumps straight to the counterexample.
 */
import type { TestContext } from 'node:test'
import fc from 'fast-check'

const DEFAULT_SEED = 0x6e617277 // "narw"

function seedFromEnv (): number {
  const value = process.env.FUZZ_SEED
  if (value === undefined || value === '') return DEFAULT_SEED
  if (value === 'random') return Math.floor(Math.random() * 2 ** 31)
  const seed = Number(value)
  if (!Number.isSafeInteger(seed)) throw new Error(`FUZZ_SEED: expected an integer or "random", got ${JSON.stringify(value)}`)
  return seed
}

function scaleFromEnv (): number {
  const value = process.env.FUZZ_SCALE
  if (value === undefined || value === '') return 1
  const scale = Number(value)
  if (!Number.isFinite(scale) || scale <= 0) throw new Error(`FUZZ_SCALE: expected a positive number, got ${JSON.stringify(value)}`)
  return scale
}

export const FUZZ_SEED = seedFromEnv()
export const FUZZ_SCALE = scaleFromEnv()

/**
 * fast-check parameters for a property that runs `baseRuns` times at FUZZ_SCALE=1. Every property
 * uses the same seed, so FUZZ_SEED alone replays any failure.
 */
export function fuzzParameters<T> (baseRuns: number, extra: fc.Parameters<T> = {}): fc.Parameters<T> {
  const numRuns = Math.max(1, Math.round(baseRuns * FUZZ_SCALE))
  const path = process.env.FUZZ_PATH
  return {
    ...extra,
    seed: FUZZ_SEED,
    numRuns,
    // The assertion message says what went wrong; without this only the input is shown.
    includeErrorInReport: true,
    ...(path !== undefined && path !== '' ? { path } : {})
  }
}

/**
 * Checks `property` with the shared seed and says in the test output how many inputs it tried.
 * fast-check throws on the first counterexample, after shrinking it, with the seed in the message.
 */
export async function checkProperty<T> (t: TestContext, property: fc.IProperty<T> | fc.IAsyncProperty<T>, baseRuns: number,
  extra: fc.Parameters<T> = {}): Promise<void> {
  const parameters = fuzzParameters<T>(baseRuns, extra)
  if (property.isAsync()) await fc.assert(property as fc.IAsyncProperty<T>, parameters)
  else fc.assert(property as fc.IProperty<T>, parameters)
  t.diagnostic(`${parameters.numRuns ?? 0} generated inputs (seed ${FUZZ_SEED})`)
}
