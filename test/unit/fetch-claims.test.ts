/**
 * Turns taken within the machine, then across machines (upstream/fetch-claims.ts claimsInTurn):
 * what the sibling workers are told depends on what the other replicas answered.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { claimsInTurn, type FetchClaims, type FetchSettled, type FetchTurn } from '../../src/upstream/fetch-claims.js'

/** Claims that answer `turn` and record each release. */
function recording (turn: 'mine' | FetchSettled): { claims: FetchClaims, released: FetchSettled[] } {
  const released: FetchSettled[] = []
  return {
    released,
    claims: {
      claim: async (): Promise<FetchTurn> => turn === 'mine'
        ? { kind: 'mine', release: (outcome) => { released.push(outcome) } }
        : { kind: 'settled', outcome: turn }
    }
  }
}

test('a sibling that had the turn: the other replicas are not asked', async () => {
  const within = recording('stored')
  const across = recording('mine')
  assert.deepEqual(await claimsInTurn(within.claims, across.claims).claim('f'), { kind: 'settled', outcome: 'stored' })
  assert.deepEqual(across.released, [])
})

test('the machine\'s turn, another replica\'s fetch: the siblings are told what the replica\'s wait ended with', async () => {
  for (const outcome of ['abandoned', 'failed'] as const) {
    const within = recording('mine')
    const turn = await claimsInTurn(within.claims, recording(outcome).claims).claim('f')
    assert.deepEqual(turn, { kind: 'settled', outcome })
    assert.deepEqual(within.released, [outcome])
  }
})

test('both turns: the fetch\'s outcome releases both', async () => {
  const within = recording('mine')
  const across = recording('mine')
  const turn = await claimsInTurn(within.claims, across.claims).claim('f')
  assert.equal(turn.kind, 'mine')
  if (turn.kind === 'mine') turn.release('stored')
  assert.deepEqual([within.released, across.released], [['stored'], ['stored']])
})
