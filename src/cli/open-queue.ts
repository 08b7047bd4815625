/**
 * Opens the pusher's queue in `queueDir` (creating and migrating it, and its spool folder): the
 * SQLite implementation (db/pusher-queue.ts) handed over as the interface the pusher defines
 * (pusher/queue.ts). Assigning one to the other here is where the compiler checks they agree.
 */
import { mkdirSync } from 'node:fs'
import { SqlitePusherQueue } from '../db/pusher-queue.js'
import type * as Stored from '../db/pusher-queue.js'
import type { Queue } from '../pusher/queue.js'
import type * as Pusher from '../pusher/queue.js'
import { spoolDir } from '../pusher/spool.js'

export { queueDatabasePath } from '../db/pusher-queue.js'

export function openQueue (queueDir: string): Queue {
  mkdirSync(spoolDir(queueDir), { recursive: true })
  const queue: Queue = SqlitePusherQueue.open(queueDir)
  return queue
}

/** `true` only when A and B are identical types (an optional field more on one side is a difference). */
type Same<A, B> = (<T>() => T extends A ? 1 : 2) extends (<T>() => T extends B ? 1 : 2) ? true : false
type Holds<T extends true> = T

/**
 * The job and row types are declared on both sides of the layer rule (db and pusher may not
 * import each other): tsc fails here the moment the two declarations differ in any field, in
 * either direction, not only where the assignment above would notice.
 */
export type QueueTypesAgree = [
  Holds<Same<Stored.JobState, Pusher.JobState>>,
  Holds<Same<Stored.Job, Pusher.Job>>,
  Holds<Same<Stored.JobFinish, Pusher.JobFinish>>,
  Holds<Same<Stored.PathOutcome, Pusher.PathOutcome>>,
  Holds<Same<Stored.QueueRows, Pusher.QueueRows>>
]
