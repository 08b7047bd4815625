/**
 * Copies a single-node cache (the SQLite database and the NAR files of a data folder) into an S3
 * bucket laid out as a Nix binary cache, so stock Nix can substitute from the bucket directly.
 *
 * The bucket is a valid cache at every moment, whenever the copy stops: nix-cache-info first;
 * a narinfo only after its NAR is complete in the bucket and after the narinfos of all its
 * references (a NAR appears whole or not at all: one PUT, or a multipart upload that becomes
 * visible when completed). So a killed export leaves narinfos whose closures are all there, and
 * running it again completes the rest.
 *
 * Idempotent: an object already in the bucket with the expected size is not sent again (the
 * bucket is listed once at the start). A narinfo that cannot be exported whole (its NAR file is
 * missing on disk, a reference is not in the cache) is left out together with every narinfo that
 * references it, and reported; `narwhal fsck` says why. Never creates the bucket.
 *
 * A killed export leaves unfinished multipart uploads (parts no reader sees, but which take
 * space). An export sweeps the bucket as a serving replica does (S3BlobStore.sweep): only uploads
 * older than its grace, so an upload in flight, another export's or a replica's, is never cut.
 * So two exports into one bucket at once write the same bytes under the same names, each narinfo
 * after its NAR: nothing one does undoes the other's. (A gc at replicas could: with a database,
 * `narwhal export` holds gc's lock.)
 */
import { Readable } from 'node:stream'
import type { MetadataStore } from '../db/metadata-store.js'
import { auxFilePath, CACHE_INFO_FILE, cacheInfoText, CONTENT_TYPE, narinfoFile } from '../nix/binary-cache-files.js'
import { parseNarInfo } from '../nix/narinfo.js'
import type { BlobStore } from '../storage/blob-store.js'
import { S3BlobStore } from '../storage/s3-blob-store.js'
import type { S3Objects } from '../storage/s3-objects.js'

export interface ExportOptions {
  /** The Priority nix-cache-info states (the server's `priority` setting). */
  priority: number
  /** NAR uploads at once (each multipart upload also sends a few parts at once). */
  jobs?: number
  /** The sweep's grace (S3BlobStore's default when undefined): an unfinished upload younger than it is left alone. */
  sweepGraceMs?: number
  /** Called after each object is written to the bucket. */
  onUploaded?: (name: string, bytes: number) => void
}

export interface ExportCounts { uploaded: number, present: number, bytesUploaded: number }

export interface ExportResult {
  cacheInfo: ExportCounts
  nars: ExportCounts
  narinfos: ExportCounts
  otherFiles: ExportCounts
  /** Unfinished multipart uploads (and temp objects) older than the sweep's grace, that were removed. */
  abortedUploads: number
  /** Unfinished uploads younger than the grace, left alone: perhaps in flight (another export, a replica), perhaps killed. */
  youngUploads: number
  /** Store paths not exported, each with why. */
  leftOut: Array<{ storePath: string, reason: string }>
}

interface PathEntry {
  storePath: string
  narFileId: number
  /** The NAR's name in the cache, from the narinfo's URL field: nar/<filehash>.nar[.ext]. */
  narName: string
  references: string[]
}

const DEFAULT_JOBS = 4
/** Small objects (narinfos, logs) written at once. */
const SMALL_JOBS = 8
const PAGE = 500

export async function exportToBucket (source: { metadata: MetadataStore, blobs: BlobStore }, bucket: S3Objects,
  options: ExportOptions): Promise<ExportResult> {
  const run = new BucketExport(source.metadata, source.blobs, bucket, options)
  await run.prepareBucket()
  await run.writeCacheInfo()
  await run.readPaths()
  await run.exportPaths()
  await run.exportOtherFiles()
  run.result.leftOut.sort((a, b) => a.storePath.localeCompare(b.storePath))
  return run.result
}

const counts = (): ExportCounts => ({ uploaded: 0, present: 0, bytesUploaded: 0 })

/** One export's state: what the bucket holds, what each store path needs, what was sent. */
class BucketExport {
  readonly result: ExportResult = { cacheInfo: counts(), nars: counts(), narinfos: counts(), otherFiles: counts(), abortedUploads: 0, youngUploads: 0, leftOut: [] }
  private readonly narJobs: Limiter
  private readonly smallJobs = limiter(SMALL_JOBS)
  /** The bucket's objects by name, with their sizes (listed once, kept up to date). */
  private readonly existing = new Map<string, number>()
  /** What each store path needs, by hash part; narinfo texts are read again when written, so a large cache is held in memory only as names. */
  private readonly paths = new Map<string, PathEntry>()
  /** Each NAR is sent once, however many narinfos name it; resolves to why it cannot be, if it cannot. */
  private readonly narsSent = new Map<number, Promise<string | undefined>>()
  /** Resolves true once the path's narinfo is in the bucket. */
  private readonly exported = new Map<string, Promise<boolean>>()

  constructor (
    private readonly metadata: MetadataStore,
    private readonly blobs: BlobStore,
    private readonly bucket: S3Objects,
    private readonly options: ExportOptions
  ) {
    this.narJobs = limiter(options.jobs ?? DEFAULT_JOBS)
  }

  /** Checks the bucket, sweeps what killed uploads left there long ago, lists what is there. */
  async prepareBucket (): Promise<void> {
    await this.bucket.checkBucket()
    const swept = await new S3BlobStore(this.bucket, { redirectNars: false, sweepGraceMs: this.options.sweepGraceMs }).sweepCounted()
    this.result.abortedUploads = swept.removed
    this.result.youngUploads = swept.inFlight
    for await (const object of this.bucket.list()) this.existing.set(object.name, object.size)
  }

  /** Writes one object unless the bucket has it with this size already. */
  private async write (name: string, size: number, tally: ExportCounts, send: () => Promise<void>): Promise<void> {
    if (this.existing.get(name) === size) {
      tally.present++
      return
    }
    await send()
    this.existing.set(name, size)
    tally.uploaded++
    tally.bytesUploaded += size
    this.options.onUploaded?.(name, size)
  }

  async writeCacheInfo (): Promise<void> {
    const info = cacheInfoText(this.options.priority)
    await this.write(CACHE_INFO_FILE, Buffer.byteLength(info), this.result.cacheInfo,
      async () => await this.bucket.put(CACHE_INFO_FILE, info, { contentType: CONTENT_TYPE.cacheInfo }))
  }

  async readPaths (): Promise<void> {
    for (let after = 0; ;) {
      const page = await this.metadata.narinfos.page(after, PAGE)
      if (page.length === 0) break
      for (const row of page) {
        this.paths.set(row.hashPart, { storePath: row.storePath, narFileId: row.narFileId, narName: parseNarInfo(row.narinfo).url, references: row.references })
      }
      after = page[page.length - 1]?.id ?? after
    }
  }

  /** Every path's NAR and narinfo, in the order the file comment gives. */
  async exportPaths (): Promise<void> {
    try {
      await Promise.all([...this.paths.keys()].map(async hashPart => await this.exportPath(hashPart)))
    } catch (err) {
      // Nothing more starts: what is under way finishes or fails, in the order above.
      this.narJobs.stop()
      this.smallJobs.stop()
      throw err
    }
  }

  private async exportNar (entry: PathEntry): Promise<string | undefined> {
    let sent = this.narsSent.get(entry.narFileId)
    if (sent === undefined) {
      sent = this.narJobs(async () => await this.sendNar(entry))
      this.narsSent.set(entry.narFileId, sent)
    }
    return await sent
  }

  private async sendNar (entry: PathEntry): Promise<string | undefined> {
    const row = await this.metadata.narFiles.getById(entry.narFileId)
    if (row === undefined) return `its NAR file row ${entry.narFileId} is gone`
    if (this.existing.get(entry.narName) === row.fileSize) {
      this.result.nars.present++
      return undefined
    }
    // Opened before sending, so a gc that removes the file meanwhile cannot cut the upload.
    const file = await this.blobs.open(row)
    if (file === undefined) return `its NAR file ${entry.narName} is missing on disk`
    if (file.kind !== 'body') throw new Error(`the cache's blob store answered ${file.kind} for ${entry.narName}`)
    if (file.size !== row.fileSize) {
      file.close()
      return `its NAR file ${entry.narName} has ${file.size} bytes on disk, not ${row.fileSize}`
    }
    await this.write(entry.narName, row.fileSize, this.result.nars,
      async () => await this.bucket.upload(entry.narName, Readable.from(file.chunks()), { contentType: CONTENT_TYPE.nar }))
      .finally(() => { file.close() })
    return undefined
  }

  /** A narinfo goes up after its NAR and its references' narinfos; resolves true once it is there. */
  private async exportPath (hashPart: string): Promise<boolean> {
    let done = this.exported.get(hashPart)
    if (done === undefined) {
      const entry = this.paths.get(hashPart)
      if (entry === undefined) return false
      done = this.exportPathOf(hashPart, entry)
      this.exported.set(hashPart, done)
    }
    return await done
  }

  private async exportPathOf (hashPart: string, entry: PathEntry): Promise<boolean> {
    const self = entry.storePath.slice('/nix/store/'.length)
    const others = entry.references.filter(ref => ref !== self)
    const [narProblem, ...refsDone] = await Promise.all([this.exportNar(entry), ...others.map(async ref => await this.exportPath(ref.slice(0, 32)))])
    const missingRef = others.find((_, i) => refsDone[i] !== true)
    let problem = narProblem
    if (problem === undefined && missingRef !== undefined) {
      const held = this.paths.get(missingRef.slice(0, 32))?.storePath === `/nix/store/${missingRef}`
      problem = `its reference ${missingRef} ${held ? 'was left out' : 'is not in the cache'}`
    }
    if (problem !== undefined) {
      this.result.leftOut.push({ storePath: entry.storePath, reason: problem })
      return false
    }
    await this.smallJobs(async () => {
      const text = await this.metadata.narinfos.text(hashPart)
      if (text === undefined) throw new Error(`narinfo ${hashPart} disappeared while exporting (a gc running?)`)
      const name = narinfoFile(hashPart)
      await this.write(name, Buffer.byteLength(text), this.result.narinfos,
        async () => await this.bucket.put(name, text, { contentType: CONTENT_TYPE.narinfo }))
    })
    return true
  }

  /** Build logs, listings, realisations, debuginfo links: files no narinfo depends on. */
  async exportOtherFiles (): Promise<void> {
    const aux: Array<Promise<void>> = []
    for (let after = 0; ;) {
      const page = await this.metadata.aux.page(after, PAGE)
      if (page.length === 0) break
      for (const entry of page) {
        const name = auxFilePath(entry.kind, entry.name)
        aux.push(this.smallJobs(async () => {
          if (this.existing.get(name) === entry.size) {
            this.result.otherFiles.present++
            return
          }
          const file = await this.metadata.aux.get(entry.kind, entry.name)
          if (file === undefined) return
          await this.write(name, file.body.length, this.result.otherFiles,
            async () => await this.bucket.put(name, file.body, { contentType: file.contentType, contentEncoding: file.contentEncoding }))
        }))
      }
      after = page[page.length - 1]?.id ?? after
    }
    await Promise.all(aux)
  }
}

interface Limiter {
  <T>(fn: () => Promise<T>): Promise<T>
  /** Tasks not started yet fail instead of starting. */
  stop: () => void
}

/** Runs at most `n` of the given tasks at once, in the order they were given. */
function limiter (n: number): Limiter {
  let active = 0
  let stopped = false
  const waiting: Array<() => void> = []
  const run = async <T>(fn: () => Promise<T>): Promise<T> => {
    if (active >= n) await new Promise<void>(resolve => waiting.push(resolve))
    else active++
    try {
      if (stopped) throw new Error('export stopped after an earlier failure')
      return await fn()
    } finally {
      const next = waiting.shift()
      if (next !== undefined) next()
      else active--
    }
  }
  return Object.assign(run, { stop: () => { stopped = true } })
}
