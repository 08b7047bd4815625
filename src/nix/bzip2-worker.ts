/**
 * The worker thread behind storage/bzip2-thread.ts: one bzip2 upload's Bzip2Decoder, off the
 * event loop. Input arrives as messages; output leaves as transferred buffers of up to 256 KiB.
 *
 * Flow control without waiting for the event loop: a shared counter holds the output buffers
 * sent and not yet consumed. At MAX_IN_FLIGHT the decoder's output callback blocks (Atomics.wait)
 * in the middle of its block until the main thread has consumed one, so a bomb's 46 MB block
 * never piles up in messages: at most 2 MiB is on its way.
 */
import { parentPort, workerData } from 'node:worker_threads'
import { Bzip2Decoder } from './bzip2-decoder.js'
import { DecodeError } from './decoder.js'

export interface Bzip2WorkerData {
  /** Int32 [0]: output buffers posted and not yet consumed by the main thread. */
  inFlight: SharedArrayBuffer
}

export type Bzip2Request = { type: 'write', chunk: Uint8Array } | { type: 'end' }

export type Bzip2Reply =
  | { type: 'output', output: Uint8Array }
  | { type: 'done' }
  | { type: 'error', decode: boolean, message: string }

const MAX_IN_FLIGHT = 8

const port = parentPort
if (port === null) throw new Error('bzip2-worker.js runs only as a worker thread')
const inFlight = new Int32Array((workerData as Bzip2WorkerData).inFlight)

const decoder = new Bzip2Decoder((output) => {
  // The decoder reuses its buffer once this returns: send a copy, transferred, not cloned.
  const copy = Buffer.allocUnsafeSlow(output.length)
  output.copy(copy)
  Atomics.add(inFlight, 0, 1)
  port.postMessage({ type: 'output', output: copy } satisfies Bzip2Reply, [copy.buffer])
  for (let n = Atomics.load(inFlight, 0); n >= MAX_IN_FLIGHT; n = Atomics.load(inFlight, 0)) {
    Atomics.wait(inFlight, 0, n)
  }
})

// One request at a time: the main thread waits for 'done' (or 'error') before the next.
port.on('message', (request: Bzip2Request) => {
  const run = async (): Promise<void> => {
    if (request.type === 'write') {
      await decoder.write(Buffer.from(request.chunk.buffer, request.chunk.byteOffset, request.chunk.byteLength))
    } else {
      await decoder.end()
    }
  }
  run().then(
    () => { port.postMessage({ type: 'done' } satisfies Bzip2Reply) },
    (err: unknown) => {
      port.postMessage({ type: 'error', decode: err instanceof DecodeError, message: (err as Error).message } satisfies Bzip2Reply)
    })
})
