/**
 * Opens the pusher's queue in `queueDir` (creating and migrating it, and its spool folder): the
 * SQLite implementation (db/pusher-queue.ts) handed over as the queue the pusher works with.
 */
import { mkdirSync } from 'node:fs'
import type { Queue } from 'narwhal:pusher-queue'
import { SqlitePusherQueue } from '../db/pusher-queue.js'
import { spoolDir } from '../pusher/spool.js'

export { queueDatabasePath } from '../db/pusher-queue.js'

export function openQueue (queueDir: string): Queue {
  mkdirSync(spoolDir(queueDir), { recursive: true })
  return SqlitePusherQueue.open(queueDir)
}
