/**
 * The bzip2 Decoder the upload path uses: bzip2-decoder.ts on a worker thread of its own.
 *
 * bzip2 is decoded in pure JavaScript a whole block at a time, and one block can be 46 MB of
 * output from about 40 bytes of input (a bomb). On the event loop that held every other request
 * up for 0.5-0.8 s per block, so any push token could stall the cache's reads for as long as its
 * uploads lasted. On a thread the event loop only receives the output, 256 KiB at a time, and
 * hashes it; bzip2-worker.ts blocks its decoder when eight buffers are waiting (2 MiB).
 *
 * A thread per upload (about 0.1 s to start, measured 90-135 ms here, and about 50 MiB while it
 * runs): Nix uploads bzip2 only when asked to. At most MAX_BZIP2_THREADS run at once in a process;
 * further bzip2 uploads wait, first come first served, without reading their bodies, for one to
 * end. Without the cap anyone with a push token could open a hundred bzip2 uploads at once and
 * take 5 GB of the server's memory.
 */
import { Worker } from 'node:worker_threads'
import { DecodeError, type DecodeSink, type Decoder } from './decoder.js'
import type { Bzip2Reply, Bzip2Request, Bzip2WorkerData } from './bzip2-worker.js'

export const MAX_BZIP2_THREADS = 2

/** Threads running, and the decoders waiting for one to end. */
let running = 0
const queue: Array<() => void> = []

/** Calls `start` now if a thread may start, else once one ends. Returns a cancel for the wait. */
function whenThreadFree (start: () => void): () => void {
  if (running < MAX_BZIP2_THREADS) {
    running++
    start()
    return () => {}
  }
  queue.push(start)
  return () => {
    const i = queue.indexOf(start)
    if (i >= 0) queue.splice(i, 1)
  }
}

/** A thread ended: the first waiting decoder may start its own. */
function threadEnded (): void {
  const next = queue.shift()
  if (next === undefined) running--
  else next()
}

/** Threads running and uploads waiting for one (read by the tests). */
export function bzip2Threads (): { running: number, waiting: number } {
  return { running, waiting: queue.length }
}

export class Bzip2ThreadDecoder implements Decoder {
  readonly #sink: DecodeSink
  readonly #inFlight: Int32Array
  #worker: Worker | undefined
  /** Resolves once this decoder's thread has started (at once, unless MAX_BZIP2_THREADS run). */
  readonly #started: Promise<void>
  /** Ends the wait for a thread with an error: the decoder was closed before its turn. */
  #refuseStart: (err: Error) => void = () => {}
  readonly #cancelWait: () => void
  #stopped = false
  #waiting: { resolve: () => void, reject: (err: unknown) => void } | undefined
  #failed = false
  #failure: unknown = undefined

  constructor (sink: DecodeSink) {
    this.#sink = sink
    const inFlight = new SharedArrayBuffer(4)
    this.#inFlight = new Int32Array(inFlight)
    let started = (): void => {}
    this.#started = new Promise<void>((resolve, reject) => {
      started = resolve
      this.#refuseStart = reject
    })
    // Awaited by each request; a refusal nobody awaits is not an unhandled one.
    this.#started.catch(() => {})
    this.#cancelWait = whenThreadFree(() => {
      const worker = new Worker(new URL('./bzip2-worker.js', import.meta.url), { workerData: { inFlight } satisfies Bzip2WorkerData })
      worker.on('message', (reply: Bzip2Reply) => { this.#receive(reply) })
      worker.on('error', (err) => { this.#fail(err) })
      worker.on('exit', () => { this.#fail(new Error('bzip2 decoder thread exited')) })
      this.#worker = worker
      started()
    })
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

  /**
   * Ends the thread, wherever it is: decoding, or waiting for its output to be taken; or the wait
   * for one. Its place goes to the next upload waiting.
   */
  #stop (): void {
    if (this.#stopped) return
    this.#stopped = true
    const worker = this.#worker
    if (worker === undefined) {
      this.#cancelWait()
      this.#refuseStart(new Error('bzip2 decoder closed before its thread started'))
      return
    }
    worker.removeAllListeners('exit')
    Atomics.store(this.#inFlight, 0, 0)
    Atomics.notify(this.#inFlight, 0)
    worker.terminate().catch(() => {}) // terminating cannot fail in a way worth reporting
    threadEnded()
  }

  async #request (request: Bzip2Request, transfer: ArrayBuffer[] = []): Promise<void> {
    await this.#started
    const worker = this.#worker
    if (this.#failed) throw this.#failure
    if (worker === undefined || this.#stopped) throw new Error('bzip2 decoder closed')
    if (this.#waiting !== undefined) throw new Error('bzip2 decoder: a write is already under way')
    await new Promise<void>((resolve, reject) => {
      this.#waiting = { resolve, reject }
      worker.postMessage(request, transfer)
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
