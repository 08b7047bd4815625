/**
 * Rule: a client that goes away mid-upload (Nix giving up on a retry, a killed `nix copy`) is
 * ordinary traffic, logged at info; the error level is kept for the server's own faults, which
 * an operator is paged for.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import net from 'node:net'
import path from 'node:path'
import { createToken, spawnServer } from '../helpers/server-process.js'
import { tempDir } from '../helpers/nix.js'
import { eventually, freshNar } from '../helpers/upload.js'

test('an upload abandoned half-way is logged as the client going away, not as an internal error', async (t) => {
  const dataDir = tempDir('narwhal-data-')
  const server = await spawnServer({ dataDir, logFile: path.join(tempDir('narwhal-log-'), 'serve.log'), trustedKeys: [] })
  t.after(async () => { await server.stop() })
  const token = await createToken(dataDir, 'push')
  const nar = await freshNar('zstd', { randomBytes: 1024 * 1024 })

  const socket = net.connect(server.port, '127.0.0.1')
  await new Promise<void>((resolve, reject) => { socket.once('connect', resolve); socket.once('error', reject) })
  socket.on('error', () => {})
  socket.write(`PUT /${nar.url} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${token}\r\n` +
    `Content-Type: application/x-nix-nar\r\nContent-Length: ${nar.bytes.length}\r\n\r\n`)
  socket.write(nar.bytes.subarray(0, nar.bytes.length >> 1))
  await new Promise(resolve => setTimeout(resolve, 300))
  socket.destroy()

  const lines = (): Array<{ level: number, msg: string }> => server.log().split('\n')
    .filter(l => l.startsWith('{')).map(l => JSON.parse(l) as { level: number, msg: string })
  const noted = await eventually(() => lines().some(l => l.msg.includes('closed the connection')))
  assert.ok(noted, `no line says the client went away:\n${server.log().slice(-3000)}`)
  assert.deepEqual(lines().filter(l => l.level >= 50), [], 'nothing is logged at error level')
})
