/**
 * A NAR being received into an S3 bucket while nar-ingest verifies it (the PendingBlob of
 * storage/blob-store.ts): nothing becomes visible under its name until commit, which the cache
 * layer calls only after verification passed.
 *
 *   small (up to one part):  chunks kept in memory ──commit──▶ one PutObject
 *   large:                   CreateMultipartUpload, then each PART_BYTES sent as an UploadPart
 *                            while the rest arrives and is verified ──commit──▶ CompleteMultipartUpload
 *   refused or failed:       discard: parts in flight cancelled, then AbortMultipartUpload
 *
 * A multipart upload needs its key before the first part: nar/<filehash>.nar<ext>, from the file
 * hash the upload claims (begin's `expectedFileHash`) and the method its first bytes show. Begun
 * without one, the parts go to tmp/<random> and commit copies the object into place server-side
 * (S3 copies at most 5 GiB in one request) and deletes the temp object.
 *
 * A process killed mid-upload leaves an unfinished multipart upload (or a temp object), which no
 * reader of the cache sees and S3BlobStore.sweep removes once it is older than its grace.
 */
import { randomBytes } from 'node:crypto'
import { NarwhalError } from '../errors.js'
import { CONTENT_TYPE } from '../nix/binary-cache-files.js'
import { DETECTION_BYTES } from '../nix/compression.js'
import { narUrl } from '../nix/nar-url.js'
import type { NarName, PendingBlob } from './blob-store.js'
import { chooseMethod } from './nar-ingest.js'
import type { MultipartUpload, S3Objects, UploadedPart } from './s3-objects.js'

/**
 * Bytes per part, and the most a small NAR keeps in memory. S3 wants at least 5 MiB for every
 * part but the last and at most 10,000 parts: 8 MiB parts hold a NAR of up to 78 GiB, more than
 * the default limits.narBytes (64 GiB).
 */
export const PART_BYTES = 8 << 20
const MAX_PARTS = 10_000
/** Parts sent at once; with the part being filled, what one upload holds in memory at most. */
const PARTS_IN_FLIGHT = 4
/** The most S3 copies in one CopyObject request. */
const MAX_COPY_BYTES = 5 * 1024 ** 3
/** Where uploads begun without their file hash keep their parts until commit. */
export const TEMP_PREFIX = 'tmp/'

type State = 'open' | 'finished' | 'committed' | 'discarded'

export class S3PendingBlob implements PendingBlob {
  readonly #objects: S3Objects
  readonly #expectedFileHash: string | undefined
  #state: State = 'open'
  /** Bytes not sent yet, held by reference. */
  #chunks: Uint8Array[] = []
  #chunkBytes = 0
  #bytes = 0
  /** Begun when the first part is full; rejects with the service's refusal. */
  #upload: Promise<MultipartUpload> | undefined
  #parts: UploadedPart[] = []
  #nextPart = 1
  readonly #inFlight = new Set<Promise<void>>()
  /** The first failure of a part sent in the background; every later call throws it. */
  #failure: unknown = undefined
  readonly #cancel = new AbortController()
  /** A completed temp object not yet copied into place (commit failed half-way): discard deletes it. */
  #tempObject: string | undefined

  constructor (objects: S3Objects, expectedFileHash: string | undefined) {
    this.#objects = objects
    this.#expectedFileHash = expectedFileHash
  }

  /**
   * Adds a chunk. Returns a promise only when the caller must wait: a part is full and as many
   * as PARTS_IN_FLIGHT are still being sent (back pressure, as the folder's temp file gives).
   */
  write (chunk: Uint8Array): Promise<void> | undefined {
    this.#check('open')
    if (chunk.length === 0) return undefined
    this.#chunks.push(chunk)
    this.#chunkBytes += chunk.length
    this.#bytes += chunk.length
    if (this.#chunkBytes < PART_BYTES) return undefined
    return this.#sendPart()
  }

  /** Every byte is where it is kept until commit: in memory (small) or in sent parts (large). */
  async finish (): Promise<void> {
    this.#check('open')
    if (this.#upload !== undefined) {
      if (this.#chunkBytes > 0) await this.#sendPart()
      while (this.#inFlight.size > 0) await Promise.race(this.#inFlight)
      if (this.#failure !== undefined) throw this.#failure
    }
    this.#state = 'finished'
  }

  /**
   * Makes the verified bytes visible as nar/<fileHash>.nar<ext>; an object already there is
   * overwritten by the same bytes, which is success. Only after finish().
   */
  async commit (name: NarName): Promise<void> {
    if (this.#state === 'committed') return
    this.#check('finished')
    const target = narUrl(name.fileHash, name.compression)
    const upload = this.#upload
    if (upload === undefined) {
      const body = this.#chunks.length === 1 ? this.#chunks[0] ?? new Uint8Array() : Buffer.concat(this.#chunks)
      await this.#objects.put(target, body, { contentType: CONTENT_TYPE.nar })
    } else {
      const started = await upload
      if (started.name.startsWith(TEMP_PREFIX)) {
        await this.#objects.completeMultipart(started, this.#parts)
        this.#tempObject = started.name
        await this.#objects.copy(started.name, target, { contentType: CONTENT_TYPE.nar })
        await this.#objects.delete(started.name)
        this.#tempObject = undefined
      } else if (started.name === target) {
        await this.#objects.completeMultipart(started, this.#parts)
      } else {
        throw new Error(`the upload begun as ${started.name} cannot be committed as ${target}`)
      }
    }
    this.#state = 'committed'
    this.#chunks = []
  }

  /** Drops the bytes and aborts the multipart upload, if any. Idempotent; after commit a no-op. */
  async discard (): Promise<void> {
    if (this.#state === 'committed' || this.#state === 'discarded') return
    this.#state = 'discarded'
    this.#chunks = []
    this.#cancel.abort()
    const upload = this.#upload
    if (upload === undefined) return
    // Parts still arriving at the service after the abort could outlive it: wait for them first.
    await Promise.allSettled(this.#inFlight)
    let started: MultipartUpload
    try {
      started = await upload
    } catch {
      return // never begun: nothing to abort
    }
    if (this.#tempObject !== undefined) await this.#objects.delete(this.#tempObject)
    else await this.#objects.abortUpload(started)
  }

  #check (expected: State): void {
    if (this.#state !== expected) throw new Error(`pending blob is ${this.#state}, not ${expected}`)
    if (this.#failure !== undefined) throw this.#failure
  }

  /** The key of the multipart upload: the NAR's own name when the file hash is known, else a temp name. */
  #uploadName (firstPart: Buffer | Uint8Array): string {
    if (this.#expectedFileHash === undefined) return `${TEMP_PREFIX}${randomBytes(16).toString('hex')}.nar`
    const head = Buffer.from(firstPart.buffer, firstPart.byteOffset, Math.min(firstPart.length, DETECTION_BYTES))
    return narUrl(this.#expectedFileHash, chooseMethod(head))
  }

  /** Sends what is gathered as the next part, in the background, once a slot is free. */
  async #sendPart (): Promise<void> {
    const body = this.#chunks.length === 1 ? this.#chunks[0] ?? new Uint8Array() : Buffer.concat(this.#chunks)
    this.#chunks = []
    this.#chunkBytes = 0
    const partNumber = this.#nextPart++
    if (partNumber > MAX_PARTS) {
      throw new NarwhalError('NARWHAL_TOO_LARGE', `NAR file is larger than the ${MAX_PARTS * PART_BYTES} bytes an S3 upload of ` +
        `${MAX_PARTS} parts of ${PART_BYTES} bytes can hold`)
    }
    if (this.#expectedFileHash === undefined && this.#bytes > MAX_COPY_BYTES) {
      throw new NarwhalError('NARWHAL_TOO_LARGE', `NAR file is larger than ${MAX_COPY_BYTES} bytes, the most an S3 store ` +
        'can copy into place; an upload that names its file hash when it begins has no such limit')
    }
    if (this.#upload === undefined) {
      this.#upload = this.#objects.startMultipart(this.#uploadName(body), { contentType: CONTENT_TYPE.nar })
      // Caught here so an unawaited rejection never goes unhandled; #check throws it on the next call.
      this.#upload.catch((err: unknown) => { this.#failure ??= err })
    }
    const upload = this.#upload
    const sending: Promise<void> = (async () => {
      const part = await this.#objects.uploadPart(await upload, partNumber, body, this.#cancel.signal)
      this.#parts.push(part)
    })().catch((err: unknown) => { this.#failure ??= err })
      .finally(() => this.#inFlight.delete(sending))
    this.#inFlight.add(sending)
    while (this.#inFlight.size >= PARTS_IN_FLIGHT) await Promise.race(this.#inFlight)
    if (this.#failure !== undefined) throw this.#failure
  }
}
