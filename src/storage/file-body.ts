/**
 * A byte range of an open NAR file in the data folder, as a BlobBody (storage/blob-store.ts) the
 * server sends. By size:
 *
 *   small          read(): one synchronous read on the event loop into a buffer of its own, sent
 *                  whole (the server asks so up to 64 KiB, and its fast path keeps them); most
 *                  NARs of a closure are this small (half of the benchmark closure's are under 200 bytes)
 *   up to 8 MiB    send(): synchronous reads of 128 KiB on the event loop into one buffer kept between
 *                  downloads, each written to the socket and taken by it before the next read
 *   larger         reads of 1 MiB on the thread pool into two fresh buffers used in turn, each
 *                  written to the socket while the next is read
 *
 * Why: up to 8 MiB, what a download costs besides its bytes weighs most, and reads on the event
 * loop into a kept buffer keep both copies (page cache to buffer, buffer to socket) on one core
 * and in its cache, and a kept buffer spares the garbage collector; beyond that, a read on
 * another core in parallel with the socket write streams faster. The cost: a read of a file not
 * in the page cache blocks the event loop (as nginx's sendfile does without `aio threads`); run
 * `--workers` on slow disks. The measurements, and the alternatives they ruled out
 * (fs.createReadStream, other chunk sizes): BENCHMARKS.md, runs of 2026-12-01 04:29-05:11 UTC.
 *
 * A FileBody owns its descriptor, which never leaves storage/: every way of ending it closes the
 * descriptor, whatever happens.
 */
import { closeSync, createReadStream, read, readSync } from 'node:fs'
import type { Writable } from 'node:stream'
import { promisify } from 'node:util'
import type { BlobBody } from './blob-store.js'

const readAsync = promisify(read)

/** Bodies up to this size are read on the event loop, larger ones on the thread pool (see above). */
const SYNC_READ_BODY_BYTES = 8 * 1024 * 1024
const SYNC_CHUNK_BYTES = 128 * 1024
const POOL_CHUNK_BYTES = 1024 * 1024

/**
 * Read buffers kept for the next download, at most MAX_SPARE_CHUNKS (4 MiB). A download beyond
 * the spares (many at once) allocates its own, which is dropped when the spares are full again.
 */
const spareChunks: Buffer[] = []
const MAX_SPARE_CHUNKS = 32

class TruncatedFileError extends Error {
  constructor () { super('NAR file ended before its recorded size') }
}

/** Reads `length` bytes at `start` synchronously, and closes `fd`. */
function readWhole (fd: number, start: number, length: number): Buffer {
  try {
    const body = Buffer.allocUnsafe(length)
    let done = 0
    while (done < length) {
      const n = readSync(fd, body, done, length - done, start + done)
      if (n === 0) throw new TruncatedFileError()
      done += n
    }
    return body
  } finally {
    closeSync(fd)
  }
}

/**
 * Resolves when the socket has taken `chunk` (its buffer may then be reused), or with the error
 * that stopped it. Never rejects: in the thread-pool loop a write fails while the loop awaits a
 * read, and a rejection nobody awaits yet would be an unhandled one.
 */
function write (res: Writable, chunk: Buffer, closed: Promise<Error>): Promise<Error | undefined> {
  const written = new Promise<Error | undefined>((resolve) => {
    res.write(chunk, (err) => { resolve(err ?? undefined) })
  })
  // A write to a connection that closes may never call back; 'close' ends the wait.
  return Promise.race([written, closed])
}

/**
 * Writes `length` bytes of the file at `start` to `res`, whose headers are already set, and ends
 * it. Never throws: a client that goes away stops the loop, and a file that fails to read after
 * the headers went out destroys the response (a truncated body; Nix checks the hash and retries).
 * Returns the error that stopped the body early, for the caller to log, if any.
 */
async function sendFileRange (res: Writable, fd: number, start: number, length: number): Promise<Error | undefined> {
  const closed = new Promise<Error>((resolve) => {
    res.once('close', () => { resolve(new Error('the client closed the connection')) })
  })
  try {
    if (length <= SYNC_READ_BODY_BYTES) await sendBySyncReads(res, fd, start, length, closed)
    else await sendByPoolReads(res, fd, start, length, closed)
    res.end()
    return undefined
  } catch (err) {
    if (res.destroyed) return undefined // the client went away: nothing went wrong here
    res.destroy()
    return err as Error
  } finally {
    closeSync(fd)
  }
}

/** Up to SYNC_READ_BODY_BYTES: reads on the event loop into one kept buffer, each written before the next. */
async function sendBySyncReads (res: Writable, fd: number, start: number, length: number, closed: Promise<Error>): Promise<void> {
  const buffer = spareChunks.pop() ?? Buffer.allocUnsafeSlow(SYNC_CHUNK_BYTES)
  let done = 0
  while (done < length) {
    const bytesRead = readSync(fd, buffer, 0, Math.min(buffer.length, length - done), start + done)
    if (bytesRead === 0) throw new TruncatedFileError()
    done += bytesRead
    // The buffer is read into again only once the socket has taken these bytes.
    const failed = await write(res, buffer.subarray(0, bytesRead), closed)
    if (failed !== undefined) throw failed
  }
  // Every write was taken: nothing refers to the buffer any more. (After a failure it is left to the
  // garbage collector, whatever may still hold it.)
  if (spareChunks.length < MAX_SPARE_CHUNKS) spareChunks.push(buffer)
}

/**
 * Larger: reads on the thread pool into two fresh buffers used in turn, each written to the socket
 * while the next is read. A buffer is read into only after the write of its previous contents was
 * taken: the write of chunk k is awaited before chunk k+1 is written, and chunk k+2 reuses chunk k's
 * buffer.
 */
async function sendByPoolReads (res: Writable, fd: number, start: number, length: number, closed: Promise<Error>): Promise<void> {
  const buffers = [Buffer.allocUnsafeSlow(POOL_CHUNK_BYTES), Buffer.allocUnsafeSlow(POOL_CHUNK_BYTES)] as const
  let pending: Promise<Error | undefined> | undefined
  let done = 0
  for (let k = 0; done < length; k++) {
    const buffer = buffers[k % 2 === 0 ? 0 : 1]
    const { bytesRead } = await readAsync(fd, buffer, 0, Math.min(buffer.length, length - done), start + done)
    if (bytesRead === 0) throw new TruncatedFileError()
    done += bytesRead
    const failed = await pending
    if (failed !== undefined) throw failed
    pending = write(res, buffer.subarray(0, bytesRead), closed)
  }
  const failed = await pending
  if (failed !== undefined) throw failed
}

/** An open NAR file's bytes `start`..`start + length - 1`; owns `fd` until it is ended. */
export class FileBody implements BlobBody {
  readonly kind = 'body'
  readonly size: number
  readonly length: number
  readonly #start: number
  #fd: number | undefined

  constructor (fd: number, size: number, start: number, length: number) {
    this.#fd = fd
    this.size = size
    this.#start = start
    this.length = length
  }

  async read (): Promise<Buffer> {
    return readWhole(this.#take(), this.#start, this.length)
  }

  /** Synchronously, for the server's fast path (FileBlobStore.immediate). */
  readNow (): Buffer {
    return readWhole(this.#take(), this.#start, this.length)
  }

  async send (sink: Writable): Promise<Error | undefined> {
    return await sendFileRange(sink, this.#take(), this.#start, this.length)
  }

  chunks (): AsyncIterable<Buffer> {
    if (this.length === 0) {
      this.close()
      return (async function * () {})()
    }
    // autoClose: the stream closes the descriptor when it ends, fails or is destroyed.
    return createReadStream('', { fd: this.#take(), start: this.#start, end: this.#start + this.length - 1, highWaterMark: 1 << 20 })
  }

  close (): void {
    if (this.#fd === undefined) return
    closeSync(this.#fd)
    this.#fd = undefined
  }

  #take (): number {
    const fd = this.#fd
    if (fd === undefined) throw new Error('NAR file body used after it was ended')
    this.#fd = undefined
    return fd
  }
}
