/**
 * Content-addressed NAR files on disk. Knows nothing of HTTP or SQL.
 *
 * Writes follow one sequence: a temp file opened with O_EXCL in store/tmp, bytes written as they
 * arrive, fsync, rename to the final name, fsync of the directory. An existing final file is
 * success (the name is the hash of the content). Any failure before the rename removes the temp
 * file, so a failed upload leaves nothing behind.
 */
import { randomBytes } from 'node:crypto'
import fs, { closeSync, existsSync, fstatSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, statfsSync, writeSync } from 'node:fs'
import path from 'node:path'
import { promisify } from 'node:util'
import { NarwhalError } from '../errors.js'
import { LAYOUT_VERSION, narFilePath, type Layout } from './layout.js'

/** Bytes gathered before one write; a socket delivers a NAR body in chunks of up to 64 KiB. */
const WRITE_BATCH_BYTES = 1 << 20
/** And at most this many chunks per write (writev takes up to IOV_MAX = 1024 buffers). */
const WRITE_BATCH_CHUNKS = 256

/**
 * Written bytes after which a sync of the file starts in the background while the upload goes on
 * (see TempFile.startEarlySync).
 */
const EARLY_SYNC_BYTES = 16 << 20

const open = promisify(fs.open)
const writev = promisify(fs.writev)
const fsync = promisify(fs.fsync)
const fdatasync = promisify(fs.fdatasync)

/**
 * An upload being received, under store/tmp. Creating it, the writes of the bytes and fsync go
 * through the thread pool; closing is a synchronous system call of a few microseconds, where a
 * trip through the pool cost more than the call, and nothing is removed after a successful
 * rename. Creating stays off the event loop: ext4 can take milliseconds to find a new inode
 * (after many files were deleted, it skips recently freed ones; measured 2 ms per create here).
 */
export class TempFile {
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

  constructor (filePath: string, fd: number) {
    this.path = filePath
    this.fd = fd
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

  /** Called by BlobStore.commitNar once the file is renamed into place. */
  markMoved (): void {
    this.moved = true
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

function fsyncDirectory (dir: string): void {
  const fd = openSync(dir, 'r')
  try { fsyncSync(fd) } finally { closeSync(fd) }
}

export class FileBlobStore {
  readonly layout: Layout

  constructor (layout: Layout) {
    this.layout = layout
  }

  /** Creates the folders and checks (or, in a new store, writes) the layout version. */
  init (): void {
    mkdirSync(this.layout.narDir, { recursive: true })
    mkdirSync(this.layout.tmpDir, { recursive: true })
    if (existsSync(this.layout.versionFile)) {
      const version = readFileSync(this.layout.versionFile, 'utf8').trim()
      if (version !== LAYOUT_VERSION) {
        throw new Error(`store layout version ${version} in ${this.layout.versionFile} is not supported (expected ${LAYOUT_VERSION})`)
      }
    } else {
      // Written whole or not at all: an empty VERSION after a power cut would stop every start.
      const temp = this.layout.versionFile + '.tmp'
      const fd = openSync(temp, 'w')
      try {
        writeSync(fd, LAYOUT_VERSION + '\n')
        fsyncSync(fd)
      } finally { closeSync(fd) }
      renameSync(temp, this.layout.versionFile)
      fsyncDirectory(this.layout.storeDir)
    }
  }

  /**
   * Empties tmp/: anything there is an upload that a crash or kill interrupted, never a committed
   * object. Only while no process serves this store: with several server processes the primary
   * does it once before the first worker starts, and a restarted worker must not (its siblings
   * have uploads in flight there).
   */
  emptyTmp (): void {
    for (const name of readdirSync(this.layout.tmpDir)) {
      rmSync(path.join(this.layout.tmpDir, name), { force: true, recursive: true })
    }
  }

  async createTemp (): Promise<TempFile> {
    const filePath = path.join(this.layout.tmpDir, randomBytes(12).toString('hex') + '.part')
    return new TempFile(filePath, await open(filePath, 'wx', 0o644))
  }

  /**
   * Moves a synced temp file to its content-addressed name. An existing file is success.
   *
   * Synchronous on purpose: the caller runs it inside the SQLite write transaction that records
   * the NAR's row (cache/store-nar.ts), so garbage collection, which deletes a row and unlinks
   * its file in one write transaction too (cache/remove-paths.ts), cannot run in between.
   *
   * `syncDirectory: false` leaves the rename's directory entry (and a new shard's) to reach the
   * disk with the kernel's next write-back instead of an fsync on the event loop: for a NAR that can be fetched again
   * if a power cut loses it (one pulled from an upstream, cache/store-pulled-nar.ts).
   */
  commitNar (temp: TempFile, fileHash: string, options: { syncDirectory: boolean } = { syncDirectory: true }): void {
    const dest = narFilePath(this.layout, fileHash)
    const dir = path.dirname(dest)
    // A shard made now is itself only an entry in nar/: without syncing nar/ a power cut could
    // lose the shard, and with it a file whose row committed.
    if (mkdirSync(dir, { recursive: true }) !== undefined && options.syncDirectory) fsyncDirectory(this.layout.narDir)
    renameSync(temp.path, dest)
    temp.markMoved()
    // The rename is only durable once the directory entry is on disk.
    if (options.syncDirectory) fsyncDirectory(dir)
  }

  /**
   * Refuses an upload of `bytes` that would leave less than `reserve` bytes free on the store's
   * file system, before anything is written: a full disk must not stop the cache from serving.
   * statfs is synchronous: a few microseconds, less than a trip through the thread pool.
   */
  async ensureRoom (bytes: number, reserve: number): Promise<void> {
    if (reserve <= 0) return
    const stats = statfsSync(this.layout.storeDir)
    const free = stats.bavail * stats.bsize
    if (free - bytes < reserve) {
      throw new NarwhalError('NARWHAL_INSUFFICIENT_STORAGE', `the cache's disk has ${free} bytes free; storing ${bytes} more ` +
        `would leave less than the reserve of ${reserve} bytes (limits.freeSpaceReserveBytes)`)
    }
  }

  narPath (fileHash: string): string {
    return narFilePath(this.layout, fileHash)
  }

  /**
   * Opens a stored NAR for reading: its descriptor and size, or undefined when it is missing.
   * Synchronous, on purpose: opening a file and reading its size are two system calls that take
   * microseconds once the inode is cached, while each asynchronous call is a round trip through
   * libuv's thread pool that costs more than the call itself (see the NAR GET route).
   */
  openNar (fileHash: string): { fd: number, size: number } | undefined {
    let fd: number
    try {
      fd = openSync(this.narPath(fileHash), 'r')
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
      throw err
    }
    try {
      return { fd, size: fstatSync(fd).size }
    } catch (err) {
      closeSync(fd)
      throw err
    }
  }

  /** The size of a stored NAR, or undefined when the file is missing. */
  async narSize (fileHash: string): Promise<number | undefined> {
    try {
      return (await fs.promises.stat(this.narPath(fileHash))).size
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
      throw err
    }
  }
}
