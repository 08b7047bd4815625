/**
 * Jobs that run at one replica at a time (gc, fsck --repair, `narwhal export`): on PostgreSQL, shared by
 * replicas, under its advisory lock (db/postgres/advisory-lock.ts), answering 'busy' at once when
 * another replica or command holds it. SQLite lives on one machine, where each gc batch is one
 * write transaction that re-checks its plan, so a job simply runs.
 */
import type { MetadataStore } from '../db/metadata-store.js'
import type { LockedOutcome, SingleWriterJob } from '../db/postgres/advisory-lock.js'
import { PgMetadataStore } from '../db/postgres/store.js'

export type { LockedOutcome, SingleWriterJob }

/** `work` gets a signal that aborts when the lock is lost (its database session ended): stop at the next step. */
export async function runSingleWriter<T> (metadata: MetadataStore, job: SingleWriterJob, work: (signal: AbortSignal) => Promise<T>): Promise<LockedOutcome<T>> {
  if (metadata instanceof PgMetadataStore) return await metadata.runExclusive(job, work)
  return { kind: 'ran', value: await work(new AbortController().signal) }
}

export type SingleWritersOutcome<T> = { kind: 'ran', value: T } | { kind: 'busy', job: SingleWriterJob }

/**
 * runSingleWriter holding several jobs' locks at once, taken in the order given (so two callers
 * that list them in the same order never wait on each other); 'busy' names the first held
 * elsewhere. `work`'s signal aborts when any of them is lost.
 */
export async function runSingleWriters<T> (metadata: MetadataStore, jobs: readonly SingleWriterJob[], work: (signal: AbortSignal) => Promise<T>,
  held: AbortSignal[] = []): Promise<SingleWritersOutcome<T>> {
  const [job, ...rest] = jobs
  if (job === undefined) return { kind: 'ran', value: await work(AbortSignal.any(held)) }
  const run = await runSingleWriter(metadata, job, async (lost) => await runSingleWriters(metadata, rest, work, [...held, lost]))
  return run.kind === 'busy' ? { kind: 'busy', job } : run.value
}
