/**
 * Who fetches an upstream NAR when several processes serve one cache (`serve --workers N`, and
 * replicas on one PostgreSQL): the one fetch of a NAR (nar-fetch.ts) is single within a process by
 * itself; across processes each asks for the NAR's turn first. The process granted it fetches and
 * reports how it ended; the others wait for that, then serve the stored NAR (or fail as it failed).
 */

import type { FetchClaims, FetchTurn } from '../db/fetch-turns.js'

export type { FetchClaims, FetchSettled, FetchTurn } from '../db/fetch-turns.js'

/** One process alone: every fetch is its own (nar-fetch.ts keeps it single within the process). */
export const SOLE_PROCESS: FetchClaims = {
  claim: async () => ({ kind: 'mine', release: () => {} })
}

/**
 * Turns taken within the machine first (the workers of one `serve --workers N`), then across the
 * machines (replicas): only the worker that won its siblings' turn asks the other replicas, and
 * its siblings learn what it learnt.
 */
export function claimsInTurn (within: FetchClaims, across: FetchClaims): FetchClaims {
  return {
    claim: async (fileHash) => {
      const local = await within.claim(fileHash)
      if (local.kind === 'settled') return local
      let remote: FetchTurn
      try {
        remote = await across.claim(fileHash)
      } catch (err) {
        local.release('abandoned')
        throw err
      }
      if (remote.kind === 'settled') {
        local.release(remote.outcome)
        return remote
      }
      return {
        kind: 'mine',
        release: (outcome) => {
          remote.release(outcome)
          local.release(outcome)
        }
      }
    },
    close: async () => {
      await within.close?.()
      await across.close?.()
    }
  }
}
