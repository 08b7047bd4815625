/**
 * Jobs that run at one replica at a time (gc, `narwhal export`; fsck --repair may follow): on PostgreSQL, shared by
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
