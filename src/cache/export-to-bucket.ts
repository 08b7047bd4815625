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
 * space); the next export aborts every unfinished upload under nar/ when it starts. So two
 * exports must not run into one bucket at once.
 */
import { Readable } from 'node:stream'
import type { MetadataStore } from '../db/metadata-store.js'
import { auxFilePath, CACHE_INFO_FILE, cacheInfoText, CONTENT_TYPE, narinfoFile } from '../nix/binary-cache-files.js'
import { parseNarInfo } from '../nix/narinfo.js'
import type { BlobStore } from '../storage/blob-store.js'
import type { S3Objects } from '../storage/s3-objects.js'

export interface ExportOptions {
  /** The Priority nix-cache-info states (the server's `priority` setting). */
  priority: number
  /** NAR uploads at once (each multipart upload also sends a few parts at once). */
  jobs?: number
  /** Called after each object is written to the bucket. */
  onUploaded?: (name: string, bytes: number) => void
}

export interface ExportCounts { uploaded: number, present: number, bytesUploaded: number }

export interface ExportResult {
  cacheInfo: ExportCounts
  nars: ExportCounts
  narinfos: ExportCounts
  otherFiles: ExportCounts
  /** Unfinished multipart uploads of NARs, left by an earlier export, that were aborted. */
  abortedUploads: number
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
  const { metadata, blobs } = source
  const counts = (): ExportCounts => ({ uploaded: 0, present: 0, bytesUploaded: 0 })
  const result: ExportResult = { cacheInfo: counts(), nars: counts(), narinfos: counts(), otherFiles: counts(), abortedUploads: 0, leftOut: [] }
  const narJobs = limiter(options.jobs ?? DEFAULT_JOBS)
  const smallJobs = limiter(SMALL_JOBS)

  await bucket.checkBucket()
  // Before any upload of this export begins, so every one found is another's.
  for await (const upload of bucket.unfinishedUploads('nar/')) {
    await bucket.abortUpload(upload)
    result.abortedUploads++
  }
  const existing = new Map<string, number>()
  for await (const object of bucket.list()) existing.set(object.name, object.size)

  /** Writes one object unless the bucket has it with this size already. */
  async function write (name: string, size: number, tally: ExportCounts, send: () => Promise<void>): Promise<void> {
    if (existing.get(name) === size) {
      tally.present++
      return
    }
    await send()
    existing.set(name, size)
    tally.uploaded++
    tally.bytesUploaded += size
    options.onUploaded?.(name, size)
  }

  const info = cacheInfoText(options.priority)
  await write(CACHE_INFO_FILE, Buffer.byteLength(info), result.cacheInfo,
    async () => await bucket.put(CACHE_INFO_FILE, info, { contentType: CONTENT_TYPE.cacheInfo }))

  // What each store path needs; narinfo texts are read again when written, so a large cache
  // is held in memory only as names.
  const paths = new Map<string, PathEntry>()
  for (let after = 0; ;) {
    const page = await metadata.narinfos.page(after, PAGE)
    if (page.length === 0) break
    for (const row of page) {
      paths.set(row.hashPart, { storePath: row.storePath, narFileId: row.narFileId, narName: parseNarInfo(row.narinfo).url, references: row.references })
    }
    after = page[page.length - 1]?.id ?? after
  }

  // Each NAR is sent once, however many narinfos name it; resolves to why it cannot be, if it cannot.
  const narsSent = new Map<number, Promise<string | undefined>>()
  function exportNar (entry: PathEntry): Promise<string | undefined> {
    let sent = narsSent.get(entry.narFileId)
    if (sent === undefined) {
      sent = narJobs(async () => {
        const row = await metadata.narFiles.getById(entry.narFileId)
        if (row === undefined) return `its NAR file row ${entry.narFileId} is gone`
        if (existing.get(entry.narName) === row.fileSize) {
          result.nars.present++
          return undefined
        }
        // Opened before sending, so a gc that removes the file meanwhile cannot cut the upload.
        const file = await blobs.open(row)
        if (file === undefined) return `its NAR file ${entry.narName} is missing on disk`
        if (file.kind !== 'body') throw new Error(`the cache's blob store answered ${file.kind} for ${entry.narName}`)
        if (file.size !== row.fileSize) {
          file.close()
          return `its NAR file ${entry.narName} has ${file.size} bytes on disk, not ${row.fileSize}`
        }
        await write(entry.narName, row.fileSize, result.nars,
          async () => await bucket.upload(entry.narName, Readable.from(file.chunks()), { contentType: CONTENT_TYPE.nar }))
          .finally(() => { file.close() })
        return undefined
      })
      narsSent.set(entry.narFileId, sent)
    }
    return sent
  }

  // A narinfo goes up after its NAR and its references' narinfos; resolves true once it is there.
  const exported = new Map<string, Promise<boolean>>()
  function exportPath (hashPart: string): Promise<boolean> {
    let done = exported.get(hashPart)
    if (done !== undefined) return done
    const entry = paths.get(hashPart)
    if (entry === undefined) return Promise.resolve(false)
    done = (async () => {
      const self = entry.storePath.slice('/nix/store/'.length)
      const others = entry.references.filter(ref => ref !== self)
      const [narProblem, ...refsDone] = await Promise.all([exportNar(entry), ...others.map(ref => exportPath(ref.slice(0, 32)))])
      const missingRef = others.find((_, i) => refsDone[i] !== true)
      let problem = narProblem
      if (problem === undefined && missingRef !== undefined) {
        const held = paths.get(missingRef.slice(0, 32))?.storePath === `/nix/store/${missingRef}`
        problem = `its reference ${missingRef} ${held ? 'was left out' : 'is not in the cache'}`
      }
      if (problem !== undefined) {
        result.leftOut.push({ storePath: entry.storePath, reason: problem })
        return false
      }
      await smallJobs(async () => {
        const text = await metadata.narinfos.text(hashPart)
        if (text === undefined) throw new Error(`narinfo ${hashPart} disappeared while exporting (a gc running?)`)
        const name = narinfoFile(hashPart)
        await write(name, Buffer.byteLength(text), result.narinfos,
          async () => await bucket.put(name, text, { contentType: CONTENT_TYPE.narinfo }))
      })
      return true
    })()
    exported.set(hashPart, done)
    return done
  }

  try {
    await Promise.all([...paths.keys()].map(exportPath))
  } catch (err) {
    // Nothing more starts: what is under way finishes or fails, in the order above.
    narJobs.stop()
    smallJobs.stop()
    throw err
  }

  // Build logs, listings, realisations, debuginfo links: files no narinfo depends on.
  const aux: Array<Promise<void>> = []
  for (let after = 0; ;) {
    const page = await metadata.aux.page(after, PAGE)
    if (page.length === 0) break
    for (const entry of page) {
      const name = auxFilePath(entry.kind, entry.name)
      aux.push(smallJobs(async () => {
        if (existing.get(name) === entry.size) {
          result.otherFiles.present++
          return
        }
        const file = await metadata.aux.get(entry.kind, entry.name)
        if (file === undefined) return
        await write(name, file.body.length, result.otherFiles,
          async () => await bucket.put(name, file.body, { contentType: file.contentType, contentEncoding: file.contentEncoding }))
      }))
    }
    after = page[page.length - 1]?.id ?? after
  }
  await Promise.all(aux)
  result.leftOut.sort((a, b) => a.storePath.localeCompare(b.storePath))
  return result
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
