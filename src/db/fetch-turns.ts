/**
 * A turn to fetch an upstream NAR, the one declaration of it: what the cross-replica turns
 * (postgres/fetch-locks.ts) and the ways of taking turns within one machine (upstream/fetch-claims.ts,
 * cli/nar-fetch-claims.ts) answer. Here, below both, so each implements the same type.
 */

/** How the fetch of another process ended: 'abandoned' when that process died, or let go, before it told. */
export type FetchSettled = 'stored' | 'failed' | 'abandoned'

export type FetchTurn =
  /**
   * This process fetches; it must call `release` with the outcome once the fetch has settled
   * ('abandoned': it did not fetch after all, the waiters look again and claim again).
   */
  | { kind: 'mine', release: (outcome: FetchSettled) => void }
  /** Another process fetched (or was fetching) it; this is how that ended. */
  | { kind: 'settled', outcome: FetchSettled }

export interface FetchClaims {
  /** This process's turn to fetch the NAR `fileHash`, or the outcome of another's fetch of it. */
  claim: (fileHash: string) => Promise<FetchTurn>
  /** Lets go of what it holds (connections); turns still held are released. */
  close?: () => Promise<void>
}
