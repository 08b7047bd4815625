/**
 * `narwhal pusher [--config FILE]`: the long-running sidecar (see src/pusher/service.ts). Refuses
 * to start when a secret key file is readable by others or not owned by the running user.
 * Stops cleanly on SIGTERM/SIGINT; whatever was in flight resumes on the next start.
 */
import { loadPusherConfig } from '../../pusher/config.js'
import { runPusher } from '../../pusher/service.js'
import { loadSecretKeys, readTokenFile } from '../../pusher/signer.js'
import { CacheClient } from '../../pusher/uploader.js'
import { openQueue } from '../open-queue.js'
import { parse } from '../usage.js'

export function timestamped (line: string): void {
  process.stderr.write(`${new Date().toISOString()} narwhal pusher: ${line}\n`)
}

export async function pusherCommand (args: string[]): Promise<number> {
  const { values } = parse(args, { config: { type: 'string' } })
  const config = loadPusherConfig({ configFile: values.config, requireServer: true, requireKeys: true })
  const keys = loadSecretKeys(config.secretKeyFiles)
  const token = readTokenFile(config.tokenFile)
  const queue = openQueue(config.queueDir)
  const client = new CacheClient(config.server, token, config.concurrency + 2)
  const controller = new AbortController()
  const stop = (): void => controller.abort()
  process.once('SIGTERM', stop)
  process.once('SIGINT', stop)
  timestamped(`started: server ${config.server}, queue ${config.queueDir}, keys ${keys.map(k => k.name).join(', ')}, ` +
    `${config.compression}, concurrency ${config.concurrency}`)
  try {
    await runPusher({ config, queue, client, keys, log: timestamped, signal: controller.signal })
  } finally {
    queue.close()
    await client.close()
  }
  timestamped('stopped')
  return 0
}
