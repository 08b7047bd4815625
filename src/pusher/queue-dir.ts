/**
 * The queue folder alone, as the hook and `queue status|wait` see it: only NARWHAL_QUEUE_DIR,
 * with the default of the pusher's `queueDir` setting. Its own module so that `narwhal hook`
 * loads nothing of the configuration mechanism (TypeBox costs it about 0.15 s a build).
 */
import path from 'node:path'

export const DEFAULT_QUEUE_DIR = '/var/lib/narwhal/queue'

export function queueDirFromEnv (env: NodeJS.ProcessEnv = process.env): string {
  const dir = env.NARWHAL_QUEUE_DIR?.trim()
  return dir === undefined || dir === '' ? DEFAULT_QUEUE_DIR : path.resolve(dir)
}
