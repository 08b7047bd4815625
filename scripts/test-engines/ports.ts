/**
 * A free loopback port for a server a test or benchmark starts (ports.sh is the engine scripts'
 * own). Next to the engine scripts, like engines.ts, so that neither test/ nor bench/ depends on
 * the other.
 */
import { once } from 'node:events'
import { createServer } from 'node:net'

export async function freePort (): Promise<number> {
  const server = createServer()
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const address = server.address()
  server.close()
  if (address === null || typeof address === 'string') throw new Error('no port')
  return address.port
}
