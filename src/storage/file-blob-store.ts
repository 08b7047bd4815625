/**
 * The data folder as a BlobStore (storage/blob-store.ts): content-addressed NAR files under
 * store/nar (layout.ts). Knows nothing of HTTP or SQL.
 *
 * Writes follow one sequence: a temp file opened with O_EXCL in store/tmp, bytes written as they
 * arrive, fsync (temp-file.ts), rename to the final name, fsync of the directory. An existing
 * final file is success (the name is the hash of the content). Any failure before the rename
 * removes the temp file, so a failed upload leaves nothing behind.
 *
 * Reads open the file synchronously: opening a file and reading its size are two system calls
 * that take microseconds once the inode is cached, while each asynchronous call is a round trip
 * through libuv's thread pool that costs more than the call itself. The body is sent as
 * file-body.ts says.
 */
import { randomBytes } from 'node:crypto'
import fs, { closeSync, existsSync, fstatSync, fsyncSync, lstatSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, statfsSync, statSync, writeSync, type Stats } from 'node:fs'
import path from 'node:path'
import { promisify } from 'node:util'
import { NarwhalError } from '../errors.js'
import { GroupSync } from '../nix/group-sync.js'
import { FILE_HASH_PATTERN } from '../nix/store-path.js'
import type { BlobRead, BlobStore, ByteRange, ImmediateReads, Leftover, NarName, PendingBlob, StoredBlob } from './blob-store.js'
import { FileBody } from './file-body.js'
import { LAYOUT_VERSION, narFilePath, type Layout } from './layout.js'
import { TempFile } from './temp-file.js'

const open = promisify(fs.open)
const fsync = promisify(fs.fsync)

const NIX32_CHARS = '0-9a-df-np-sv-z'
const SHARD_NAME = new RegExp(`^[${NIX32_CHARS}]{2}$`)
const NAR_FILE_NAME = new RegExp(`^${FILE_HASH_PATTERN}$`)

function fsyncDirectory (dir: string): void {
  const fd = openSync(dir, 'r')
  try { fsyncSync(fd) } finally { closeSync(fd) }
}

/** The same on the thread pool; opening and closing a directory take microseconds, done here. */
async function syncDirectory (dir: string): Promise<void> {
  const fd = openSync(dir, 'r')
  try { await fsync(fd) } finally { closeSync(fd) }
}

/** A directory's entries, sorted; none when it is missing. */
function readDirIfPresent (dir: string): string[] {
  try {
    return readdirSync(dir).sort()
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return []
    throw err
  }
}

/** lstat that answers undefined for a missing file; other errors (EACCES, EIO) are thrown. */
function lstatOrUndefined (file: string): Stats | undefined {
  try {
    return lstatSync(file)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw err
  }
}

export class FileBlobStore implements BlobStore {
  readonly kind = 'folder'
  readonly layout: Layout
  readonly immediate: ImmediateReads
  readonly #directorySyncs = new GroupSync(syncDirectory)

  constructor (layout: Layout) {
    this.layout = layout
    this.immediate = {
      size: fileHash => this.#statSize(fileHash),
      readWhole: (fileHash, size) => {
        const body = this.#open(fileHash)
        if (body === undefined) return undefined
        if (body.size !== size) {
          body.close()
          return undefined
        }
        return body.readNow()
      }
    }
  }

  describe (): string {
    return this.layout.storeDir
  }

  where (name: { fileHash: string }): string {
    return narFilePath(this.layout, name.fileHash)
  }

  /** Creates the folders and checks (or, in a new store, writes) the layout version. */
  init (): void {
    mkdirSync(this.layout.narDir, { recursive: true })
    mkdirSync(this.layout.tmpDir, { recursive: true })
    if (existsSync(this.layout.versionFile)) {
      this.#checkVersion()
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

  /** A folder written by another layout version is not ours to judge; a folder not made yet is fine. */
  async check (): Promise<void> {
    if (existsSync(this.layout.versionFile)) this.#checkVersion()
  }

  #checkVersion (): void {
    const version = readFileSync(this.layout.versionFile, 'utf8').trim()
    if (version !== LAYOUT_VERSION) {
      throw new Error(`store layout version ${version} in ${this.layout.versionFile} is not supported (expected ${LAYOUT_VERSION})`)
    }
  }

  /**
   * Removes the temp files of process `pid`, which died: uploads it had in flight (a worker of
   * `serve --workers N` killed mid-upload), while its siblings' go on. Returns how many.
   */
  removeTempFilesOf (pid: number): number {
    const prefix = `${pid}-`
    const names = readDirIfPresent(this.layout.tmpDir).filter(name => name.startsWith(prefix))
    for (const name of names) rmSync(path.join(this.layout.tmpDir, name), { force: true })
    return names.length
  }

  /**
   * Empties tmp/: anything there is an upload that a crash or kill interrupted, never a committed
   * object (see BlobStore.sweep for when it may run).
   */
  async sweep (): Promise<void> {
    for (const name of readDirIfPresent(this.layout.tmpDir)) {
      rmSync(path.join(this.layout.tmpDir, name), { force: true, recursive: true })
    }
  }

  /** A new temp file, created off the event loop (why: TempFile). */
  async begin (): Promise<PendingBlob & TempFile> {
    // Named after this process, so that a dead worker's leftovers can be told from its siblings' uploads (removeTempFilesOf).
    const filePath = path.join(this.layout.tmpDir, `${process.pid}-${randomBytes(12).toString('hex')}.part`)
    return new TempFile(filePath, await open(filePath, 'wx', 0o644), async (temp, name, durable) => await this.#place(temp, name.fileHash, durable))
  }

  /**
   * Moves a synced temp file to its content-addressed name; an existing file is success. With
   * `durable`, the rename's directory entry (and a new shard's) is synced before it returns;
   * without, it reaches the disk with the kernel's next write-back. mkdir and rename are
   * synchronous calls of microseconds, as before the seam (through the thread pool the CPU per
   * small upload rose measurably: BENCHMARKS.md, issue 17 blob store); the directory syncs wait on
   * the thread pool, shared by the uploads that finish meanwhile (nix/group-sync.ts).
   */
  async #place (temp: string, fileHash: string, durable: boolean): Promise<void> {
    const dest = narFilePath(this.layout, fileHash)
    const dir = path.dirname(dest)
    const newShard = mkdirSync(dir, { recursive: true }) !== undefined
    renameSync(temp, dest)
    if (!durable) return
    // The rename is only durable once the directory entry is on disk; a shard made now is itself
    // only an entry in nar/, so without syncing nar/ a power cut could lose the shard and the file
    // with it. Both before the row goes live, in either order: at once, they cost one journal commit.
    await Promise.all([this.#directorySyncs.sync(dir), newShard ? this.#directorySyncs.sync(this.layout.narDir) : undefined])
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

  async open (name: NarName, range?: ByteRange): Promise<BlobRead | undefined> {
    return this.#open(name.fileHash, range)
  }

  /** Synchronous, on purpose (see the header). */
  #open (fileHash: string, range?: ByteRange): FileBody | undefined {
    let fd: number
    try {
      fd = openSync(narFilePath(this.layout, fileHash), 'r')
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
      throw err
    }
    try {
      const size = fstatSync(fd).size
      return range === undefined ? new FileBody(fd, size, 0, size) : new FileBody(fd, size, range.start, range.end - range.start + 1)
    } catch (err) {
      closeSync(fd)
      throw err
    }
  }

  /** Only a regular file is an object: anything else at its name is missing. */
  async size (name: NarName): Promise<number | undefined> {
    let stats
    try {
      stats = await fs.promises.stat(narFilePath(this.layout, name.fileHash))
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
      throw err
    }
    return stats.isFile() ? stats.size : undefined
  }

  #statSize (fileHash: string): number | undefined {
    const stats = statSync(narFilePath(this.layout, fileHash), { throwIfNoEntry: false })
    return stats?.isFile() === true ? stats.size : undefined
  }

  /** Asynchronous: the last link of a large file can take a while to free. */
  async delete (name: { fileHash: string }): Promise<void> {
    await fs.promises.rm(narFilePath(this.layout, name.fileHash), { force: true })
  }

  /** The regular files of store/nar/<h0h1>/ named by a file hash in their own shard, shard by shard. */
  async * list (): AsyncIterable<StoredBlob> {
    for (const shard of readDirIfPresent(this.layout.narDir)) {
      if (!SHARD_NAME.test(shard)) continue
      const shardPath = path.join(this.layout.narDir, shard)
      for (const name of readDirIfPresent(shardPath)) {
        if (!NAR_FILE_NAME.test(name) || !name.startsWith(shard)) continue
        const stats = lstatOrUndefined(path.join(shardPath, name))
        if (stats === undefined || !stats.isFile()) continue // removed meanwhile, or a stray
        yield { fileHash: name, compression: undefined, size: stats.size, modifiedAt: stats.mtimeMs }
      }
    }
  }

  /** What store/nar holds besides objects, then the uploads in store/tmp. */
  async * leftovers (youngSince: number): AsyncIterable<Leftover> {
    await this.check()
    yield * this.#strays()
    for (const name of readDirIfPresent(this.layout.tmpDir)) {
      const file = path.join(this.layout.tmpDir, name)
      const stats = lstatOrUndefined(file)
      if (stats === undefined) continue // the upload finished meanwhile
      if (stats.mtimeMs >= youngSince) {
        yield { kind: 'in-flight', subject: file, reason: 'an upload in progress', removable: false }
        continue
      }
      yield {
        kind: 'stale-temp',
        subject: file,
        reason: `untouched since ${new Date(stats.mtimeMs).toISOString()}: an upload a crash or kill interrupted`,
        removable: true
      }
    }
  }

  /** store/nar holds only <2 nix32 chars>/<52-char file hash in that shard>, regular files. */
  * #strays (): Iterable<Leftover> {
    const { narDir } = this.layout
    const stray = (file: string, stats: Stats, reason: string): Leftover => stats.isDirectory()
      ? { kind: 'stray', subject: file, reason: `${reason}; a directory, left for you to look at`, removable: false }
      : { kind: 'stray', subject: file, reason, removable: true }
    for (const shard of readDirIfPresent(narDir)) {
      const shardPath = path.join(narDir, shard)
      const shardStats = lstatOrUndefined(shardPath)
      if (shardStats === undefined) continue
      if (!shardStats.isDirectory() || !SHARD_NAME.test(shard)) {
        yield stray(shardPath, shardStats, 'store/nar holds only folders named by two nix32 characters')
        continue
      }
      for (const name of readDirIfPresent(shardPath)) {
        const file = path.join(shardPath, name)
        const stats = lstatOrUndefined(file)
        if (stats === undefined) continue // removed meanwhile
        if (!NAR_FILE_NAME.test(name)) {
          yield stray(file, stats, 'not named by a NAR file hash (52 nix32 characters)')
        } else if (!name.startsWith(shard)) {
          yield stray(file, stats, `misplaced: a NAR file with this name belongs in store/nar/${name.slice(0, 2)}/`)
        } else if (!stats.isFile()) {
          yield stray(file, stats, 'not a regular file, though it has a NAR file name')
        }
      }
    }
  }

  /** Only what lies under store/nar or store/tmp, as leftovers() named it. */
  async removeLeftover (subject: string): Promise<void> {
    const resolved = path.resolve(subject)
    const inside = [this.layout.narDir, this.layout.tmpDir].some(dir => resolved.startsWith(path.resolve(dir) + path.sep))
    if (!inside) throw new Error(`${subject} is not in the NAR store ${this.layout.storeDir}`)
    await fs.promises.rm(resolved, { force: true, recursive: true })
  }

  /** The folder is not a Nix binary cache by itself: the server serves narinfos from the database. */
  async publishNarinfo (): Promise<void> {}
  async unpublishNarinfo (): Promise<void> {}
  async publishCacheInfo (): Promise<void> {}
}
