/**
 * A TCP forwarder on a loopback port that a test can stop and start again on the same port: a
 * service that goes away (connections refused, open ones cut) and comes back, without stopping
 * the real service other tests share.
 */
import net from 'node:net'

export class TcpProxy {
  port = 0
  readonly #target: { host: string, port: number }
  #server: net.Server | undefined
  readonly #sockets = new Set<net.Socket>()

  constructor (target: { host: string, port: number }) {
    this.#target = target
  }

  /** Listens (on the same port as before, after a stop). */
  async start (): Promise<void> {
    const server = net.createServer(client => {
      const upstream = net.connect(this.#target)
      for (const socket of [client, upstream]) {
        this.#sockets.add(socket)
        socket.on('close', () => this.#sockets.delete(socket))
        socket.on('error', () => { client.destroy(); upstream.destroy() })
      }
      client.pipe(upstream).pipe(client)
    })
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(this.port, '127.0.0.1', () => resolve())
    })
    const address = server.address()
    if (address === null || typeof address === 'string') throw new Error('the proxy has no TCP address')
    this.port = address.port
    this.#server = server
  }

  /** Stops listening and cuts every open connection. */
  async stop (): Promise<void> {
    const server = this.#server
    this.#server = undefined
    for (const socket of this.#sockets) socket.destroy()
    if (server !== undefined) await new Promise<void>(resolve => server.close(() => resolve()))
  }
}
