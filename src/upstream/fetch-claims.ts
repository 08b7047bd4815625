/**
 * Who fetches an upstream NAR when several processes serve one cache (`serve --workers N`): the
 * one fetch of a NAR (nar-fetch.ts) is single within a process by itself; across processes each
 * asks for the NAR's turn first. The process granted it fetches and reports how it ended; the
 * others wait for that, then serve the stored NAR from the disk (or fail as it failed).
 */

/** How the fetch of another process ended: 'abandoned' when that process died before it told. */
export type FetchSettled = 'stored' | 'failed' | 'abandoned'

export type FetchTurn =
  /** This process fetches; it must call `release` with the outcome once the fetch has settled. */
  | { kind: 'mine', release: (outcome: 'stored' | 'failed') => void }
  /** Another process fetched (or was fetching) it; this is how that ended. */
  | { kind: 'settled', outcome: FetchSettled }

export interface FetchClaims {
  /** This process's turn to fetch the NAR `fileHash`, or the outcome of another's fetch of it. */
  claim: (fileHash: string) => Promise<FetchTurn>
}

/** One process alone: every fetch is its own (nar-fetch.ts keeps it single within the process). */
export const SOLE_PROCESS: FetchClaims = {
  claim: async () => ({ kind: 'mine', release: () => {} })
}
