/**
 * NAR files in an S3 bucket that is at every moment a valid Nix binary cache (the layout of
 * nix/binary-cache-files.ts and nix/nar-url.ts, the same one `narwhal export` writes):
 *
 *   nix-cache-info              publishCacheInfo
 *   <hash32>.narinfo            publishNarinfo / unpublishNarinfo: written after its NAR is committed
 *   nar/<filehash>.nar<ext>     begin → S3PendingBlob → commit (whole or not at all)
 *   tmp/<random>.nar            parts of an upload begun without its file hash, until commit
 *
 * So stock Nix, or a CDN, reading the bucket over HTTP sees only verified NARs and narinfos whose
 * NARs are there. Every failure of the service is NARWHAL_STORAGE_UNAVAILABLE (s3-objects.ts),
 * which the server answers with 503 and Retry-After.
 */
import { CACHE_INFO_FILE, CONTENT_TYPE, narinfoFile } from '../nix/binary-cache-files.js'
import { VERIFIABLE_COMPRESSIONS, extensionFor } from '../nix/compression.js'
import { narUrl, parseNarUrl } from '../nix/nar-url.js'
import type { BlobRead, BlobStore, ByteRange, Leftover, NarName, PublishedNarinfos, StoredBlob } from './blob-store.js'
import { S3Body } from './s3-body.js'
import { S3Objects } from './s3-objects.js'
import { S3PendingBlob, TEMP_PREFIX } from './s3-pending-blob.js'
import { parseS3Url } from './s3-url.js'

export interface S3BlobStoreOptions {
  /** Answer NAR downloads with a presigned URL of the object instead of its bytes (storage.redirectNars). */
  redirectNars: boolean
  /** How long a presigned URL works; a client follows it at once. */
  presignSeconds?: number
  /** An unfinished upload (or temp object) older than this is one whose uploader died (sweep). */
  sweepGraceMs?: number
}

/** Five minutes: long enough for a slow client to start the download, short enough to leak little. */
const PRESIGN_SECONDS = 300
/** A NAR upload that has not finished in six hours is a killed one. */
const SWEEP_GRACE_MS = 6 * 3600_000

/** The method a NAR key's extension names; '' is both none and gzip (Nix gives gzip no extension). */
const COMPRESSION_OF_EXTENSION = new Map<string, string>(
  VERIFIABLE_COMPRESSIONS.filter(c => extensionFor(c) !== '').map(c => [extensionFor(c), c]))

const MULTIPART_SUBJECT = /^multipart upload (\S+) of (.+)$/
/** `<hash part>.narinfo`: 32 characters of Nix's base-32 alphabet. */
const NARINFO_NAME = /^([0-9a-df-np-sv-z]{32})\.narinfo$/
/** An ETag that is an MD5 of the bytes (a multipart upload's has a -N suffix). */
const MD5_ETAG = /^[0-9a-f]{32}$/

export class S3BlobStore implements BlobStore {
  readonly kind = 's3'
  readonly objects: S3Objects
  readonly #redirectNars: boolean
  readonly #presignSeconds: number
  readonly #sweepGraceMs: number
  /** The `<hashPart>.narinfo` objects at the top of the bucket (under its prefix). */
  readonly published: PublishedNarinfos

  constructor (objects: S3Objects, options: S3BlobStoreOptions) {
    this.objects = objects
    this.published = {
      list: async function * () {
        for await (const object of objects.list('', { topLevel: true })) {
          const hashPart = NARINFO_NAME.exec(object.name)?.[1]
          if (hashPart === undefined) continue
          yield { hashPart, md5: object.etag !== undefined && MD5_ETAG.test(object.etag) ? object.etag : undefined }
        }
      },
      read: async (hashPart: string) => (await objects.get(narinfoFile(hashPart)))?.toString('utf8'),
      where: (hashPart: string) => this.#url(narinfoFile(hashPart))
    }
    this.#redirectNars = options.redirectNars
    this.#presignSeconds = options.presignSeconds ?? PRESIGN_SECONDS
    this.#sweepGraceMs = options.sweepGraceMs ?? SWEEP_GRACE_MS
  }

  /** The store of an `s3://` storage URL, without a request yet (check() asks the service). */
  static fromUrl (url: string, options: S3BlobStoreOptions): S3BlobStore {
    return new S3BlobStore(new S3Objects(parseS3Url(url)), options)
  }

  /** The store of an `s3://` storage URL, once the bucket is known to be there and usable. */
  static async open (url: string, options: S3BlobStoreOptions): Promise<S3BlobStore> {
    const store = S3BlobStore.fromUrl(url, options)
    try {
      await store.check()
    } catch (err) {
      store.close()
      throw err
    }
    return store
  }

  /** `s3://BUCKET/PREFIX at ENDPOINT`. */
  describe (): string {
    return this.objects.describe()
  }

  where (name: { fileHash: string, compression: string | undefined }): string {
    const key = name.compression === undefined ? `nar/${name.fileHash}.nar[.ext]` : narUrl(name.fileHash, name.compression)
    return this.#url(key)
  }

  /** Throws NARWHAL_STORAGE_UNAVAILABLE unless the bucket is there and the credentials may use it. */
  async check (): Promise<void> {
    await this.objects.checkBucket()
  }

  /**
   * Starts receiving a NAR. With the file hash its bytes should have, a large one is uploaded
   * under its own name from the first part; without, under a temp name copied at commit.
   */
  async begin (expectedFileHash?: string): Promise<S3PendingBlob> {
    return new S3PendingBlob(this.objects, expectedFileHash)
  }

  /**
   * A presigned URL of the NAR (redirectNars: nothing is asked of the service, the caller's
   * metadata says it is there), or its bytes, the inclusive `range` of them when one is given
   * (checked by the caller against the size); undefined when the bucket has no such NAR.
   */
  async open (name: NarName, range?: ByteRange): Promise<BlobRead | undefined> {
    const key = narUrl(name.fileHash, name.compression)
    if (this.#redirectNars) return { kind: 'redirect', url: await this.objects.presignedGet(key, this.#presignSeconds) }
    const read = await this.objects.read(key, range)
    return read === undefined ? undefined : new S3Body(read)
  }

  async size (name: NarName): Promise<number | undefined> {
    return await this.objects.size(narUrl(name.fileHash, name.compression))
  }

  /** Removes a NAR; one already gone is success. Without its compression it is looked for by hash. */
  async delete (name: { fileHash: string, compression: string | undefined }): Promise<void> {
    if (name.compression !== undefined) {
      await this.objects.delete(narUrl(name.fileHash, name.compression))
      return
    }
    for await (const object of this.objects.list(`nar/${name.fileHash}.nar`)) {
      if (parseNarUrl(object.name)?.fileHash === name.fileHash) await this.objects.delete(object.name)
    }
  }

  /** Every NAR in the bucket (objects under nar/ with other names are leftovers). */
  async * list (): AsyncGenerator<StoredBlob> {
    for await (const object of this.objects.list('nar/')) {
      const nar = parseNarUrl(object.name)
      if (nar === undefined) continue
      yield { fileHash: nar.fileHash, compression: COMPRESSION_OF_EXTENSION.get(nar.extension), size: object.size, modifiedAt: object.lastModified }
    }
  }

  /** A bucket has no free-space reserve to keep: always room. */
  async ensureRoom (_bytes: number, _reserve: number): Promise<void> {}

  /**
   * Aborts unfinished multipart uploads and deletes temp objects older than the grace: what a
   * killed uploader left (a failed upload cleans up after itself). Replicas may sweep at once;
   * the grace keeps each from touching another's uploads in flight, and one already gone is success.
   */
  async sweep (now = Date.now()): Promise<void> {
    await this.sweepCounted(now)
  }

  /** sweep(), saying how many it removed and how many it left because they may be in flight. */
  async sweepCounted (now = Date.now()): Promise<{ removed: number, inFlight: number }> {
    const swept = { removed: 0, inFlight: 0 }
    for await (const leftover of this.leftovers(now - this.#sweepGraceMs)) {
      if (leftover.kind === 'stale-temp') {
        await this.removeLeftover(leftover.subject)
        swept.removed++
      } else if (leftover.kind === 'in-flight') {
        swept.inFlight++
      }
    }
    return swept
  }

  /**
   * Unfinished multipart uploads and temp objects (stale before `youngSince`, in flight after),
   * and objects under nar/ that are not named as NARs (strays, left for a person).
   */
  async * leftovers (youngSince: number): AsyncGenerator<Leftover> {
    for (const prefix of ['nar/', TEMP_PREFIX]) {
      for await (const upload of this.objects.unfinishedUploads(prefix)) {
        const subject = `multipart upload ${upload.uploadId} of ${this.#url(upload.name)}`
        yield upload.initiated.getTime() < youngSince
          ? { kind: 'stale-temp', subject, reason: 'an upload that never completed (its uploader was killed)', removable: true }
          : { kind: 'in-flight', subject, reason: 'an upload in progress', removable: false }
      }
    }
    for await (const object of this.objects.list(TEMP_PREFIX)) {
      const subject = this.#url(object.name)
      yield object.lastModified < youngSince
        ? { kind: 'stale-temp', subject, reason: 'an upload\'s temp object that was never copied into place', removable: true }
        : { kind: 'in-flight', subject, reason: 'an upload being copied into place', removable: false }
    }
    for await (const object of this.objects.list('nar/')) {
      if (parseNarUrl(object.name) === undefined) {
        yield { kind: 'stray', subject: this.#url(object.name), reason: 'not named as a NAR (nar/<file hash>.nar[.ext])', removable: false }
      }
    }
  }

  /** Removes a leftover by the subject leftovers() reported: aborts an upload, deletes a temp object. */
  async removeLeftover (subject: string): Promise<void> {
    const multipart = MULTIPART_SUBJECT.exec(subject)
    const name = this.#nameOf(multipart?.[2] ?? subject)
    if (name === undefined || !(name.startsWith(TEMP_PREFIX) || (multipart !== null && name.startsWith('nar/')))) {
      throw new Error(`${subject} is not a leftover this store removes`)
    }
    if (multipart !== null) await this.objects.abortUpload({ name, uploadId: multipart[1] ?? '' })
    else await this.objects.delete(name)
  }

  /** Writes `<hashPart>.narinfo`: only after its NAR is committed and its row is live. */
  async publishNarinfo (hashPart: string, text: string): Promise<void> {
    await this.objects.put(narinfoFile(hashPart), text, { contentType: CONTENT_TYPE.narinfo })
  }

  /** Removes `<hashPart>.narinfo`, before gc deletes its NAR; one already gone is success. */
  async unpublishNarinfo (hashPart: string): Promise<void> {
    await this.objects.delete(narinfoFile(hashPart))
  }

  /** Writes `nix-cache-info` (nix/binary-cache-files.ts cacheInfoText). */
  async publishCacheInfo (text: string): Promise<void> {
    await this.objects.put(CACHE_INFO_FILE, text, { contentType: CONTENT_TYPE.cacheInfo })
  }

  close (): void {
    this.objects.close()
  }

  /** `s3://BUCKET/PREFIXname`: how subjects and where() name an object. */
  #url (name: string): string {
    return `s3://${this.objects.location.bucket}/${this.objects.key(name)}`
  }

  #nameOf (url: string): string | undefined {
    const base = this.#url('')
    return url.startsWith(base) ? url.slice(base.length) : undefined
  }
}
