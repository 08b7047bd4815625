/**
 * NAR files in an S3 bucket that is at every moment a valid Nix binary cache (the layout of
 * nix/binary-cache-files.ts and nix/nar-url.ts, the same one `narwhal export` writes):
 *
 *   nix-cache-info              publishCacheInfo
 *   <hash32>.narinfo            publishNarinfo / unpublishNarinfo: written after its NAR is committed
 *   nar/<filehash>.nar<ext>     begin → S3PendingBlob → commit (whole or not at all)
 *
 * So stock Nix, or a CDN, reading the bucket over HTTP sees only verified NARs and narinfos whose
 * NARs are there. Every failure of the service is NARWHAL_STORAGE_UNAVAILABLE (s3-objects.ts).
 *
 * A NAR is named by its file hash alone; its extension, which the bucket key carries, is found
 * with one ListObjectsV2 under nar/<filehash>.nar, which also gives its size.
 */
import type { Readable } from 'node:stream'
import { CACHE_INFO_FILE, CONTENT_TYPE, narinfoFile } from '../nix/binary-cache-files.js'
import { parseNarUrl } from '../nix/nar-url.js'
import { S3Objects, type S3Object } from './s3-objects.js'
import { S3PendingBlob } from './s3-pending-blob.js'
import { parseS3Url } from './s3-url.js'

export interface S3BlobStoreOptions {
  /** Answer NAR downloads with a presigned URL of the object instead of its bytes (storage.redirectNars). */
  redirectNars: boolean
  /** How long a presigned URL works; a client follows it at once. */
  presignSeconds?: number
  /** An unfinished multipart upload older than this is one whose uploader died (sweep). */
  sweepGraceMs?: number
}

/** What open() answers for a NAR that is there. */
export type S3NarRead =
  | { kind: 'body', size: number, start: number, end: number, stream: Readable }
  | { kind: 'redirect', url: string }

/** Five minutes: long enough for a slow client to start the download, short enough to leak little. */
const PRESIGN_SECONDS = 300
/** A NAR upload that has not finished in six hours is a killed one. */
const SWEEP_GRACE_MS = 6 * 3600_000

export class S3BlobStore {
  readonly objects: S3Objects
  readonly #redirectNars: boolean
  readonly #presignSeconds: number
  readonly #sweepGraceMs: number

  constructor (objects: S3Objects, options: S3BlobStoreOptions) {
    this.objects = objects
    this.#redirectNars = options.redirectNars
    this.#presignSeconds = options.presignSeconds ?? PRESIGN_SECONDS
    this.#sweepGraceMs = options.sweepGraceMs ?? SWEEP_GRACE_MS
  }

  /** The store of an `s3://` storage URL, once the bucket is known to be there and usable. */
  static async open (url: string, options: S3BlobStoreOptions): Promise<S3BlobStore> {
    const objects = new S3Objects(parseS3Url(url))
    try {
      await objects.checkBucket()
    } catch (err) {
      objects.close()
      throw err
    }
    return new S3BlobStore(objects, options)
  }

  /** `s3://BUCKET/PREFIX at ENDPOINT`, for messages and logs. */
  describe (): string {
    return this.objects.describe()
  }

  /** Starts receiving the NAR whose bytes should hash to `expectedFileHash`. */
  async begin (expectedFileHash: string): Promise<S3PendingBlob> {
    return new S3PendingBlob(this.objects, expectedFileHash)
  }

  /**
   * A NAR for sending: a presigned URL (redirectNars) or a stream of its bytes, the inclusive
   * `range` of them when one is given (the caller checked it against the size); undefined when
   * the bucket has no such NAR.
   */
  async open (fileHash: string, range?: { start: number, end: number }): Promise<S3NarRead | undefined> {
    const object = await this.#locate(fileHash)
    if (object === undefined) return undefined
    if (this.#redirectNars) return { kind: 'redirect', url: await this.objects.presignedGet(object.name, this.#presignSeconds) }
    const read = await this.objects.read(object.name, range)
    if (read === undefined) return undefined
    return { kind: 'body', size: read.size, start: read.start, end: read.end, stream: read.body }
  }

  /** The size of a stored NAR, or undefined when the bucket has none. */
  async size (fileHash: string): Promise<number | undefined> {
    return (await this.#locate(fileHash))?.size
  }

  /** Removes a NAR; one already gone is success. */
  async delete (fileHash: string): Promise<void> {
    for await (const object of this.objects.list(`nar/${fileHash}.nar`)) {
      if (parseNarUrl(object.name)?.fileHash === fileHash) await this.objects.delete(object.name)
    }
  }

  /** Every NAR in the bucket, for fsck and gc; objects under nar/ by other names are passed over. */
  async * list (): AsyncGenerator<{ fileHash: string, size: number }> {
    for await (const object of this.objects.list('nar/')) {
      const nar = parseNarUrl(object.name)
      if (nar !== undefined) yield { fileHash: nar.fileHash, size: object.size }
    }
  }

  /** A bucket has no free-space reserve to keep: always room. */
  async ensureRoom (_bytes: number, _reserve: number): Promise<void> {}

  /**
   * Aborts the unfinished multipart uploads of NARs older than the grace: uploads whose process
   * was killed (a failed upload aborts its own). Several replicas may sweep at once: an upload
   * already aborted by another is success. Returns how many it aborted.
   */
  async sweep (now = Date.now()): Promise<number> {
    let aborted = 0
    for await (const upload of this.objects.unfinishedUploads('nar/')) {
      if (upload.initiated.getTime() > now - this.#sweepGraceMs) continue
      await this.objects.abortUpload(upload)
      aborted++
    }
    return aborted
  }

  /** Writes `<hashPart>.narinfo`: only after its NAR is committed and its row is live. */
  async publishNarinfo (hashPart: string, text: string): Promise<void> {
    await this.objects.put(narinfoFile(hashPart), text, { contentType: CONTENT_TYPE.narinfo })
  }

  /** Removes `<hashPart>.narinfo`, before gc deletes its NAR; one already gone is success. */
  async unpublishNarinfo (hashPart: string): Promise<void> {
    await this.objects.delete(narinfoFile(hashPart))
  }

  /** Writes `nix-cache-info` (StoreDir, WantMassQuery, Priority: nix/binary-cache-files.ts cacheInfoText). */
  async publishCacheInfo (text: string): Promise<void> {
    await this.objects.put(CACHE_INFO_FILE, text, { contentType: CONTENT_TYPE.cacheInfo })
  }

  close (): void {
    this.objects.close()
  }

  /** The object of a NAR (its key carries the extension the file hash does not say). */
  async #locate (fileHash: string): Promise<S3Object | undefined> {
    for await (const object of this.objects.list(`nar/${fileHash}.nar`)) {
      if (parseNarUrl(object.name)?.fileHash === fileHash) return object
    }
    return undefined
  }
}
