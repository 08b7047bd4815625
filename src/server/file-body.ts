/**
 * Sending a byte range of an open file (a NAR) as a response body, by size:
 *
 *   up to 64 KiB   one synchronous read on the event loop (a few microseconds from the page
 *                  cache); most NARs of a closure are this small (half of the benchmark closure's
 *                  are under 200 bytes)
 *   up to 1 MiB    one read on libuv's thread pool into one buffer, sent whole
 *   larger         reads of 1 MiB on the thread pool into two buffers used in turn, each written
 *                  to the socket while the next is read
 *
 * Why not fs.createReadStream for large files: every 1 MiB chunk of a stream is a new buffer, cold
 * in the CPU cache and more work for the garbage collector. Two reused buffers stay warm. A 123 MB
 * NAR over loopback, medians of 9 alternating curl downloads (2026-11-30, 2-core EPYC): nginx
 * (sendfile) 52 ms, a bare node:http server piping createReadStream 99 ms, the same server with
 * two reused buffers 62 ms. In narwhal, the bench closure's six NARs over 10 MB (226 MB) took
 * 0.38 s with the stream and 0.13-0.19 s with this loop (nginx 0.11 s). Keeping buffer pairs for
 * the next download measured no better, so each download allocates its own two.
 *
 * Every function closes the descriptor it is given, whatever happens.
 */
import { closeSync, read, readSync } from 'node:fs'
import type { ServerResponse } from 'node:http'
import { promisify } from 'node:util'

const readAsync = promisify(read)

export const SMALL_BODY_BYTES = 64 * 1024
export const WHOLE_BODY_BYTES = 1024 * 1024
/** Reads of a large body; 256 KiB to 4 MiB measured the same, 64 KiB was slower. */
const CHUNK_BYTES = 1024 * 1024

class TruncatedFileError extends Error {
  constructor () { super('NAR file ended before its recorded size') }
}

/** Reads `length` bytes at `start` synchronously. */
export function readWhole (fd: number, start: number, length: number): Buffer {
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

/** readWhole on the thread pool, for bodies too large to read on the event loop. */
export async function readWholeAsync (fd: number, start: number, length: number): Promise<Buffer> {
  try {
    const body = Buffer.allocUnsafe(length)
    let done = 0
    while (done < length) {
      const { bytesRead } = await readAsync(fd, body, done, length - done, start + done)
      if (bytesRead === 0) throw new TruncatedFileError()
      done += bytesRead
    }
    return body
  } finally {
    closeSync(fd)
  }
}

/**
 * Resolves when the socket has taken `chunk` (its buffer may then be reused), or with the error
 * that stopped it. Never rejects: a write fails while the loop awaits a read, and a rejection
 * nobody awaits yet would be an unhandled one.
 */
function write (res: ServerResponse, chunk: Buffer, closed: Promise<Error>): Promise<Error | undefined> {
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
export async function sendFileRange (res: ServerResponse, fd: number, start: number, length: number): Promise<Error | undefined> {
  const closed = new Promise<Error>((resolve) => {
    res.once('close', () => { resolve(new Error('the client closed the connection')) })
  })
  // A buffer is read into only after the write of its previous contents was taken by the socket: the
  // write of chunk k is awaited before chunk k+1 is written, and chunk k+2 reuses chunk k's buffer.
  const buffers = [Buffer.allocUnsafeSlow(Math.min(CHUNK_BYTES, length)), Buffer.allocUnsafeSlow(Math.min(CHUNK_BYTES, length))] as const
  let pending: Promise<Error | undefined> | undefined
  let done = 0
  try {
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
