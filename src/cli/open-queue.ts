/**
 * Opens the pusher's queue in `queueDir` (creating and migrating it, and its spool folder): the
 * SQLite implementation (db/pusher-queue.ts) handed over as the interface the pusher defines
 * (pusher/queue.ts). Assigning one to the other here is where the compiler checks they agree.
 */
import { mkdirSync } from 'node:fs'
import { SqlitePusherQueue } from '../db/pusher-queue.js'
import type { Queue } from '../pusher/queue.js'
import { spoolDir } from '../pusher/spool.js'

export { queueDatabasePath } from '../db/pusher-queue.js'

export function openQueue (queueDir: string): Queue {
  mkdirSync(spoolDir(queueDir), { recursive: true })
  const queue: Queue = SqlitePusherQueue.open(queueDir)
  return queue
}
