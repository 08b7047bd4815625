/**
 * The bzip2 Decoder the upload path uses: bzip2-decoder.ts on a worker thread of its own.
 *
 * bzip2 is decoded in pure JavaScript a whole block at a time, and one block can be 46 MB of
 * output from about 40 bytes of input (a bomb). On the event loop that held every other request
 * up for 0.5-0.8 s per block, so any push token could stall the cache's reads for as long as its
 * uploads lasted. On a thread the event loop only receives the output, 256 KiB at a time, and
 * hashes it; bzip2-worker.ts blocks its decoder when eight buffers are waiting (2 MiB).
 *
 * A thread per upload (about 0.1 s to start, measured 90-135 ms here): Nix uploads bzip2 only when
 * asked to.
 */
import { Worker } from 'node:worker_threads'
import { DecodeError, type DecodeSink, type Decoder } from './decoder.js'
import type { Bzip2Reply, Bzip2Request, Bzip2WorkerData } from './bzip2-worker.js'

export class Bzip2ThreadDecoder implements Decoder {
  readonly #sink: DecodeSink
  readonly #inFlight: Int32Array
  readonly #worker: Worker
  #waiting: { resolve: () => void, reject: (err: unknown) => void } | undefined
  #failed = false
  #failure: unknown = undefined

  constructor (sink: DecodeSink) {
    this.#sink = sink
    const inFlight = new SharedArrayBuffer(4)
    this.#inFlight = new Int32Array(inFlight)
    this.#worker = new Worker(new URL('./bzip2-worker.js', import.meta.url), { workerData: { inFlight } satisfies Bzip2WorkerData })
    this.#worker.on('message', (reply: Bzip2Reply) => { this.#receive(reply) })
    this.#worker.on('error', (err) => { this.#fail(err) })
    this.#worker.on('exit', () => { this.#fail(new Error('bzip2 decoder thread exited')) })
  }

  write (chunk: Buffer): Promise<void> | undefined {
    if (chunk.length === 0) return undefined
    // Sent as a copy of its own, transferred: cloning a Buffer clones the whole memory it is a
    // view of (a socket's pool, or a 12 MB file read whole: 2.3x slower and 5x the memory).
    const copy = Buffer.allocUnsafeSlow(chunk.length)
    chunk.copy(copy)
    return this.#request({ type: 'write', chunk: copy }, [copy.buffer])
  }

  end (): Promise<void> {
    return this.#request({ type: 'end' })
  }

  close (): void {
    this.#stop()
    const waiting = this.#waiting
    this.#waiting = undefined
    waiting?.reject(new Error('bzip2 decoder closed'))
  }

  /** Ends the thread, wherever it is: decoding, or waiting for its output to be taken. */
  #stop (): void {
    this.#worker.removeAllListeners('exit')
    Atomics.store(this.#inFlight, 0, 0)
    Atomics.notify(this.#inFlight, 0)
    this.#worker.terminate().catch(() => {}) // terminating cannot fail in a way worth reporting
  }

  #request (request: Bzip2Request, transfer: ArrayBuffer[] = []): Promise<void> {
    if (this.#failed) return Promise.reject(this.#failure)
    if (this.#waiting !== undefined) throw new Error('bzip2 decoder: a write is already under way')
    return new Promise<void>((resolve, reject) => {
      this.#waiting = { resolve, reject }
      this.#worker.postMessage(request, transfer)
    })
  }

  #receive (reply: Bzip2Reply): void {
    switch (reply.type) {
      case 'output':
        if (!this.#failed) {
          try {
            this.#sink(Buffer.from(reply.output.buffer, reply.output.byteOffset, reply.output.byteLength))
          } catch (err) {
            this.#fail(err)
          }
        }
        // Consumed (or dropped): the thread may go on.
        Atomics.sub(this.#inFlight, 0, 1)
        Atomics.notify(this.#inFlight, 0)
        return
      case 'done': {
        const waiting = this.#waiting
        this.#waiting = undefined
        if (this.#failed) waiting?.reject(this.#failure)
        else waiting?.resolve()
        return
      }
      case 'error':
        this.#fail(reply.decode ? new DecodeError(reply.message) : new Error(reply.message))
    }
  }

  /**
   * The first failure wins: the sink's own error (a limit) passes through unchanged. The thread
   * stops at once: what it would still decode (a bomb's next blocks) is wanted by no one.
   */
  #fail (err: unknown): void {
    if (!this.#failed) {
      this.#failed = true
      this.#failure = err
      this.#stop()
    }
    const waiting = this.#waiting
    this.#waiting = undefined
    waiting?.reject(this.#failure)
  }
}
