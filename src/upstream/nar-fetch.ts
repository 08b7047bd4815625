/**
 * One download of one NAR from an upstream, shared by every client that asks for it meanwhile.
 *
 *   upstream body ──▶ count (≤ FileSize) ──▶ storePulledNar (verify like an upload, temp file, commit)
 *                              └──▶ clients (each chunk once the next arrived; the last after the commit)
 *
 * Clients get the bytes as they arrive, one chunk behind: the last chunk is held back until the
 * whole NAR verified and was stored, and on any failure the clients' responses are destroyed
 * instead, short of their Content-Length. So no client receives a whole NAR that did not verify.
 *
 * A client that comes late gets the chunks sent so far from memory, while they are at most
 * REPLAY_BYTES; after that, late clients wait for the NAR to be stored and are served from the
 * disk. The download is paced by the verification and the disk, never by a client: a client
 * whose unsent bytes pass MAX_CLIENT_BACKLOG_BYTES is cut off (its retry is served from the disk).
 */
import type { ServerResponse } from 'node:http'
import { storePulledNar, type ExpectedNar } from '../cache/store-pulled-nar.js'
import { NarwhalError } from '../errors.js'

export const REPLAY_BYTES = 1024 * 1024
export const MAX_CLIENT_BACKLOG_BYTES = 16 * 1024 * 1024

/** Verifies and stores a body; calls `verified` once the bytes are proven right, before they are stored. */
export type StoreBody = (body: AsyncIterable<Buffer>, verified: () => void) => ReturnType<typeof storePulledNar>

export class NarFetch {
  readonly expected: ExpectedNar
  /** Resolves once the upstream answered 200 (clients may attach), rejects when it did not. */
  readonly ready: Promise<void>
  /** Resolves true once stored, false when the download or its verification failed. */
  readonly done: Promise<boolean>
  #clients = new Set<{ response: ServerResponse, finished: () => void }>()
  #replay: Buffer[] | undefined = []
  #replayBytes = 0
  #held: Buffer | undefined
  #received = 0

  /**
   * `open` starts the download (the answer's body, once its status is 200); `store` verifies and
   * stores a body; `onBytes` counts what arrived.
   */
  constructor (expected: ExpectedNar, open: () => Promise<AsyncIterable<Buffer> & { destroy: (err?: Error) => void }>,
    store: StoreBody, onBytes: (n: number) => void) {
    this.expected = expected
    let markReady: () => void = () => {}
    let markFailed: (err: unknown) => void = () => {}
    this.ready = new Promise<void>((resolve, reject) => { markReady = resolve; markFailed = reject })
    // Nobody may be waiting on `ready` (every client went away); its rejection is still handled.
    this.ready.catch(() => {})
    this.done = (async () => {
      const body = await open().catch((err: unknown) => { markFailed(err); throw err })
      markReady()
      try {
        await store(this.#relay(body, onBytes), () => { this.#release() })
      } catch (err) {
        body.destroy()
        throw err
      }
    })().then(() => {
      this.#finish(true)
      return true
    }, (err: unknown) => {
      this.#finish(false)
      this.error = err
      return false
    })
  }

  /** Why it failed, once `done` resolved false. */
  error: unknown

  /** Whether a client attaching now can be sent the NAR from its first byte. */
  get joinable (): boolean {
    return this.#replay !== undefined
  }

  /**
   * Streams the NAR to `response` (whose headers the caller wrote); resolves when the response
   * ended or was cut off. Only while `joinable`.
   */
  sendTo (response: ServerResponse): Promise<void> {
    if (this.#replay === undefined) throw new Error('NAR fetch: too late to stream from the first byte')
    return new Promise<void>(resolve => {
      const client = { response, finished: resolve }
      for (const chunk of this.#replay ?? []) response.write(chunk)
      this.#clients.add(client)
      response.once('close', () => {
        this.#clients.delete(client)
        resolve()
      })
    })
  }

  async * #relay (body: AsyncIterable<Buffer>, onBytes: (n: number) => void): AsyncGenerator<Buffer> {
    for await (const chunk of body) {
      this.#received += chunk.length
      onBytes(chunk.length)
      if (this.#received > this.expected.fileSize) {
        throw new NarwhalError('NARWHAL_NAR_INVALID', `NAR from upstream: more than the ${this.expected.fileSize} bytes of its signed narinfo's FileSize`)
      }
      if (this.#held !== undefined) this.#broadcast(this.#held)
      this.#held = chunk
      yield chunk
    }
  }

  #broadcast (chunk: Buffer): void {
    for (const client of this.#clients) {
      client.response.write(chunk)
      if (client.response.writableLength > MAX_CLIENT_BACKLOG_BYTES) client.response.destroy()
    }
    if (this.#replay !== undefined) {
      this.#replay.push(chunk)
      this.#replayBytes += chunk.length
      if (this.#replayBytes > REPLAY_BYTES) this.#replay = undefined
    }
  }

  /**
   * The NAR verified: the clients get their last bytes now, while it is written to the disk (a
   * failure to store it from here on costs the cache a copy, never a client a wrong NAR).
   */
  #release (): void {
    const clients = [...this.#clients]
    this.#clients.clear()
    this.#replay = undefined
    for (const { response, finished } of clients) response.end(this.#held, () => finished())
  }

  #finish (stored: boolean): void {
    const clients = [...this.#clients]
    this.#clients.clear()
    this.#replay = undefined
    for (const { response, finished } of clients) {
      if (stored) {
        response.end(this.#held, () => finished())
      } else {
        // Short of its Content-Length: the client sees a failed download, never a complete one.
        response.destroy()
        finished()
      }
    }
  }
}
