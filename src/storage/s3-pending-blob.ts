/**
 * A NAR being received into an S3 bucket while nar-ingest verifies it: nothing becomes visible
 * under its name until commit, which is called only after verification passed.
 *
 *   small (up to one part):  chunks kept in memory ──commit──▶ one PutObject
 *   large:                   CreateMultipartUpload, then each PART_BYTES sent as an UploadPart
 *                            while the rest arrives and is verified ──commit──▶ CompleteMultipartUpload
 *   refused or failed:       discard: AbortMultipartUpload (parts in flight are cancelled first)
 *
 * A process killed mid-upload leaves an unfinished multipart upload, which no reader sees and
 * S3BlobStore.sweep aborts once it is older than its grace. The object's key is the NAR's name
 * in a Nix binary cache (nar/<filehash>.nar<ext>), so the bucket stays a cache stock Nix reads;
 * a large upload needs its key before its first part, so the file hash the upload claims and the
 * method of its first bytes name it, and commit refuses any other hash.
 */
import { NarwhalError } from '../errors.js'
import { CONTENT_TYPE } from '../nix/binary-cache-files.js'
import { DETECTION_BYTES } from '../nix/compression.js'
import { narUrl } from '../nix/nar-url.js'
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
const PARTS_IN_FLIGHT = 3

type State = 'open' | 'finished' | 'committed' | 'discarded'

export class S3PendingBlob {
  readonly #objects: S3Objects
  readonly #fileHash: string
  #state: State = 'open'
  /** Bytes not sent yet, held by reference. */
  #chunks: Uint8Array[] = []
  #chunkBytes = 0
  #bytes = 0
  /** The object's name, known from the first DETECTION_BYTES. */
  #name: string | undefined
  /** Begun when the first part is full; rejects with the service's refusal. */
  #upload: Promise<MultipartUpload> | undefined
  #parts: UploadedPart[] = []
  #nextPart = 1
  readonly #inFlight = new Set<Promise<void>>()
  /** The first failure of a part sent in the background; every later call throws it. */
  #failure: unknown = undefined
  readonly #cancel = new AbortController()

  constructor (objects: S3Objects, expectedFileHash: string) {
    this.#objects = objects
    this.#fileHash = expectedFileHash
  }

  /** Bytes received so far. */
  get bytes (): number {
    return this.#bytes
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
   * Makes the verified bytes visible under nar/<fileHash>.nar<ext>; an object already there is
   * overwritten by the same bytes, which is success. Only after finish().
   */
  async commit (fileHash: string): Promise<void> {
    if (this.#state === 'committed') return
    this.#check('finished')
    if (fileHash !== this.#fileHash) {
      throw new Error(`pending blob began for ${this.#fileHash} is committed as ${fileHash}`)
    }
    const upload = this.#upload
    if (upload === undefined) {
      const body = this.#chunks.length === 1 ? this.#chunks[0] ?? new Uint8Array() : Buffer.concat(this.#chunks)
      await this.#objects.put(this.#nameFrom(body), body, { contentType: CONTENT_TYPE.nar })
    } else {
      await this.#objects.completeMultipart(await upload, this.#parts)
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
    await this.#objects.abortUpload(started)
  }

  #check (expected: State): void {
    if (this.#state !== expected) throw new Error(`pending blob is ${this.#state}, not ${expected}`)
    if (this.#failure !== undefined) throw this.#failure
  }

  /** nar/<fileHash>.nar<ext>, the extension from the method the first bytes show. */
  #nameFrom (head: Uint8Array): string {
    this.#name ??= narUrl(this.#fileHash, head.length < DETECTION_BYTES ? 'none' : chooseMethod(Buffer.from(head.buffer, head.byteOffset, DETECTION_BYTES)))
    return this.#name
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
    const name = this.#nameFrom(body)
    if (this.#upload === undefined) {
      this.#upload = this.#objects.startMultipart(name, { contentType: CONTENT_TYPE.nar })
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
