/**
 * An upload being received into the data folder: the folder's PendingBlob (storage/blob-store.ts).
 * A temp file opened with O_EXCL in store/tmp, bytes written as they arrive (1 MiB at a time),
 * fsync, then a rename to its content-addressed name (FileBlobStore's commit). Any failure
 * before the rename removes the temp file, so a failed upload leaves nothing behind.
 */
import fs, { closeSync } from 'node:fs'
import { promisify } from 'node:util'
import type { NarName, PendingBlob } from './blob-store.js'

/** Bytes gathered before one write; a socket delivers a NAR body in chunks of up to 64 KiB. */
const WRITE_BATCH_BYTES = 1 << 20
/** And at most this many chunks per write (writev takes up to IOV_MAX = 1024 buffers). */
const WRITE_BATCH_CHUNKS = 256

/**
 * Written bytes after which a sync of the file starts in the background while the upload goes on
 * (see TempFile.startEarlySync).
 */
const EARLY_SYNC_BYTES = 16 << 20

const writev = promisify(fs.writev)
const fsync = promisify(fs.fsync)
const fdatasync = promisify(fs.fdatasync)

/**
 * An upload being received, under store/tmp. Creating it, the writes of the bytes and fsync go
 * through the thread pool; closing is a synchronous system call of a few microseconds, where a
 * trip through the pool cost more than the call, and nothing is removed after a successful
 * rename. Creating stays off the event loop: ext4 can take milliseconds to find a new inode
 * after many files were deleted (it skips recently freed ones).
 */
export class TempFile implements PendingBlob {
  readonly path: string
  private readonly fd: number
  private closed = false
  /** True once renamed into place: nothing is left at the temp name. */
  private moved = false
  /** Chunks not written yet, held by reference (a stream's chunks are its reader's to keep). */
  private batch: Uint8Array[] = []
  private batchBytes = 0
  /** The write under way, if any; it never rejects (see failure). */
  private inFlight: Promise<void> | undefined
  private failure: unknown = undefined
  /** Bytes written so far, and how many of them a finished sync has put on the disk. */
  private written = 0
  private synced = 0
  /** The early sync under way, if any; it never rejects (see failure). */
  private syncing: Promise<void> | undefined

  /** Moves the synced file to its final name (FileBlobStore.place). */
  private readonly place: (temp: string, name: NarName, durable: boolean) => Promise<void>

  constructor (filePath: string, fd: number, place: (temp: string, name: NarName, durable: boolean) => Promise<void>) {
    this.path = filePath
    this.fd = fd
    this.place = place
  }

  write (chunk: Uint8Array): Promise<void> | undefined {
    return this.append(chunk)
  }

  async finish (): Promise<void> {
    await this.sync()
  }

  async commit (name: NarName, options: { durable?: boolean } = {}): Promise<void> {
    if (this.moved) return
    if (!this.closed || this.synced !== this.written) throw new Error('temp file committed before it was finished')
    await this.place(this.path, name, options.durable ?? true)
    this.moved = true
  }

  /**
   * Adds `chunk` to the file. The bytes are gathered and written 1 MiB at a time, one write
   * under way while the caller goes on verifying; a promise is returned only when the caller
   * must wait for the previous write to finish. A write error surfaces here or in sync().
   * One write per chunk cost a thread-pool round trip per 64 KiB (bench/ingest-cpu.ts).
   */
  append (chunk: Uint8Array): Promise<void> | undefined {
    if (this.failure !== undefined) throw this.failure
    // The descriptor's number may already belong to another file.
    if (this.closed) throw new Error('temp file appended to after it was closed')
    if (chunk.length === 0) return undefined
    this.batch.push(chunk)
    this.batchBytes += chunk.length
    if (this.batchBytes < WRITE_BATCH_BYTES && this.batch.length < WRITE_BATCH_CHUNKS) return undefined
    return this.startWrite()
  }

  /** Flushes to stable storage and closes; call before commit. */
  async sync (): Promise<void> {
    await this.flush()
    await this.syncing
    // An early sync's error counts even if this fsync succeeds: after a failed write-back Linux
    // may report the error once and then call the pages clean.
    if (this.failure !== undefined) throw this.failure
    await fsync(this.fd)
    this.synced = this.written
    await this.close()
  }

  /** Bytes of the file known to be on the disk: all of it after sync(), part of it before. */
  get bytesSynced (): number {
    return this.synced
  }

  async close (): Promise<void> {
    if (this.closed) return
    this.closed = true
    // Never close a descriptor with a write or sync still under way on it.
    await this.inFlight
    await this.syncing
    closeSync(this.fd)
  }

  /** Removes the temp file; safe to call after any failure, and more than once. */
  async discard (): Promise<void> {
    await this.close().catch(() => {})
    if (this.moved) return
    // Asynchronous: the last link of a large file can take a while to free.
    await fs.promises.rm(this.path, { force: true })
  }

  /** Writes whatever is gathered and waits for every write to finish. */
  private async flush (): Promise<void> {
    if (this.batch.length > 0) await this.startWrite()
    await this.inFlight
    if (this.failure !== undefined) throw this.failure
  }

  /** Waits for the previous write, then starts one of the gathered chunks without waiting for it. */
  private async startWrite (): Promise<void> {
    await this.inFlight
    if (this.failure !== undefined) throw this.failure
    const buffers = this.batch
    this.batch = []
    this.batchBytes = 0
    this.inFlight = this.writeAll(buffers).catch((err: unknown) => { this.failure ??= err })
  }

  private async writeAll (buffers: Uint8Array[]): Promise<void> {
    let rest = buffers
    while (rest.length > 0) {
      let { bytesWritten } = await writev(this.fd, rest as NodeJS.ArrayBufferView[])
      if (bytesWritten === 0) throw new Error('writing the temp file made no progress')
      // A short write (rare for a regular file, e.g. at a full disk) goes on where it stopped.
      let i = 0
      while (i < rest.length && bytesWritten >= (rest[i]?.length ?? 0)) bytesWritten -= rest[i++]?.length ?? 0
      rest = rest.slice(i)
      if (bytesWritten > 0 && rest[0] !== undefined) rest[0] = rest[0].subarray(bytesWritten)
    }
    this.written += buffers.reduce((sum, b) => sum + b.length, 0)
    if (this.written - this.synced >= EARLY_SYNC_BYTES && this.syncing === undefined) this.startEarlySync()
  }

  /**
   * Starts writing what the file holds so far to the disk, without waiting for it. Without it
   * the kernel keeps a large upload in the page cache and the final fsync writes all of it while
   * the client waits for its answer; started every EARLY_SYNC_BYTES, the disk works while the
   * rest of the body arrives and is verified, and the final fsync has only the tail left.
   * fdatasync: the size and block map are all the final fsync needs besides.
   */
  private startEarlySync (): void {
    const upTo = this.written
    this.syncing = fdatasync(this.fd)
      .then(() => { this.synced = upTo }, (err: unknown) => { this.failure ??= err })
      .finally(() => { this.syncing = undefined })
  }
}
