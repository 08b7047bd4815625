/**
 * Objects in one S3 bucket (under the storage URL's key prefix), through the AWS SDK v3. Knows
 * nothing of narinfos or SQL: names in, bytes out, and every failure as one NarwhalError kind
 * (NARWHAL_STORAGE_UNAVAILABLE) whose message says what to fix.
 *
 * Credentials come from the SDK's standard chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY,
 * AWS_PROFILE or the URL's profile, ~/.aws files). Buckets are never created.
 */
import { createReadStream } from 'node:fs'
import type { Readable } from 'node:stream'
import type { S3Client, S3ClientConfig } from '@aws-sdk/client-s3'
import { NarwhalError } from '../errors.js'
import type { S3Location } from './s3-url.js'

/** Part size of multipart uploads; a body up to this size goes up in one PUT. */
export const MULTIPART_PART_BYTES = 16 << 20
/** Parts of one upload sent at once (memory: this many parts are buffered). */
const MULTIPART_QUEUE = 4
/** Connections to the service at once. */
const MAX_CONNECTIONS = 1024

/** An object as a listing shows it: `lastModified` in unix ms. */
type Sdk = typeof import('@aws-sdk/client-s3')
let sdkLoading: Promise<Sdk> | undefined
/** The AWS SDK, loaded once, when a process first talks to a bucket (it costs a start ~0.5 s and ~28 MB). */
async function loadSdk (): Promise<Sdk> {
  sdkLoading ??= import('@aws-sdk/client-s3')
  return await sdkLoading
}

export interface S3Object {
  name: string
  size: number
  lastModified: number
  /** The service's ETag, quotes removed: the MD5 of the bytes for an object written in one PUT without KMS encryption. */
  etag: string | undefined
}
/** A multipart upload begun and neither completed nor aborted: its parts take space, no reader sees them. */
export interface UnfinishedUpload { name: string, uploadId: string, initiated: Date }

/** A multipart upload by the name of its object and the id the service gave it. */
export interface MultipartUpload { name: string, uploadId: string }
export interface UploadedPart { partNumber: number, etag: string }

/** An object's bytes being read: the whole object or the range asked for (inclusive end). */
export interface ObjectRead {
  /** The whole object's size. */
  size: number
  start: number
  end: number
  body: Readable
}

export interface PutOptions {
  contentType: string
  contentEncoding?: string | null
}

export class S3Objects {
  readonly location: S3Location
  readonly #config: S3ClientConfig
  /** Made at the first call: the SDK is loaded only by a process that uses a bucket. */
  #connection: Promise<{ client: S3Client, sdk: Sdk }> | undefined
  #closed = false

  constructor (location: S3Location) {
    this.location = location
    this.#config = {
      region: location.region,
      endpoint: location.endpoint,
      forcePathStyle: location.forcePathStyle,
      profile: location.profile,
      // The SDK's default sends a streamed body aws-chunked with a trailing checksum, which Ceph
      // pacific's RGW refuses (MissingContentLength); plain bodies work with every S3 service.
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      requestHandler: {
        // A service that stops answering must fail the call, not hang it: no connection in 10 s,
        // no answer 120 s after the request (this SDK only warns unless told to throw), or a
        // connection idle for 120 s (a streamed NAR whose reader stalled).
        connectionTimeout: 10_000,
        requestTimeout: 120_000,
        throwOnRequestTimeout: true,
        socketTimeout: 120_000,
        // A streamed NAR holds its connection until its client has it all: the SDK's default of
        // 50 would let 50 slow downloads queue every other call (uploads, HEADs) behind them.
        httpAgent: { keepAlive: true, maxSockets: MAX_CONNECTIONS },
        httpsAgent: { keepAlive: true, maxSockets: MAX_CONNECTIONS }
      }
    }
  }

  /** `s3://BUCKET/PREFIX` (and the endpoint), for messages. */
  describe (): string {
    const where = `s3://${this.location.bucket}/${this.location.prefix}`
    return this.location.endpoint === undefined ? where : `${where} at ${this.location.endpoint}`
  }

  key (name: string): string {
    return this.location.prefix + name
  }

  /** Throws NARWHAL_STORAGE_UNAVAILABLE unless the bucket exists and the credentials may use it. */
  async checkBucket (): Promise<void> {
    try {
      const { client, sdk } = await this.#connect()
      await client.send(new sdk.HeadBucketCommand({ Bucket: this.location.bucket }))
    } catch (err) {
      throw this.failure(err, 'checking the bucket')
    }
  }

  /** The size of an object, or undefined when there is none. */
  async size (name: string): Promise<number | undefined> {
    try {
      const { client, sdk } = await this.#connect()
      const head = await client.send(new sdk.HeadObjectCommand({ Bucket: this.location.bucket, Key: this.key(name) }))
      return head.ContentLength
    } catch (err) {
      if (statusOf(err) === 404 && errorName(err) !== 'NoSuchBucket') return undefined
      throw this.failure(err, `reading the size of ${name}`)
    }
  }

  /**
   * Every object whose name starts with `namePrefix` (under the location's prefix), a page at a
   * time; with `topLevel`, only those with no further '/' in their names (not what is in "folders").
   */
  async * list (namePrefix = '', options: { topLevel?: boolean } = {}): AsyncGenerator<S3Object> {
    let token: string | undefined
    do {
      let page
      try {
        const { client, sdk } = await this.#connect()
        page = await client.send(new sdk.ListObjectsV2Command({
          Bucket: this.location.bucket, Prefix: this.key(namePrefix), ContinuationToken: token, Delimiter: options.topLevel === true ? '/' : undefined
        }))
      } catch (err) {
        throw this.failure(err, 'listing the bucket')
      }
      for (const object of page.Contents ?? []) {
        if (object.Key === undefined) continue
        yield {
          name: object.Key.slice(this.location.prefix.length),
          size: object.Size ?? 0,
          lastModified: object.LastModified?.getTime() ?? 0,
          etag: object.ETag?.replaceAll('"', '')
        }
      }
      token = page.IsTruncated === true ? page.NextContinuationToken : undefined
    } while (token !== undefined)
  }

  /** The unfinished multipart uploads of objects whose names start with `namePrefix`. */
  async * unfinishedUploads (namePrefix = ''): AsyncGenerator<UnfinishedUpload> {
    let keyMarker: string | undefined
    let uploadIdMarker: string | undefined
    for (;;) {
      let page
      try {
        const { client, sdk } = await this.#connect()
        page = await client.send(new sdk.ListMultipartUploadsCommand({
          Bucket: this.location.bucket, Prefix: this.key(namePrefix), KeyMarker: keyMarker, UploadIdMarker: uploadIdMarker
        }))
      } catch (err) {
        throw this.failure(err, 'listing unfinished multipart uploads')
      }
      for (const upload of page.Uploads ?? []) {
        if (upload.Key === undefined || upload.UploadId === undefined) continue
        yield { name: upload.Key.slice(this.location.prefix.length), uploadId: upload.UploadId, initiated: upload.Initiated ?? new Date(0) }
      }
      if (page.IsTruncated !== true) return
      keyMarker = page.NextKeyMarker
      uploadIdMarker = page.NextUploadIdMarker
    }
  }

  /** Begins a multipart upload: nothing is visible under `name` until it is completed. */
  async startMultipart (name: string, options: PutOptions): Promise<MultipartUpload> {
    try {
      const { client, sdk } = await this.#connect()
      const started = await client.send(new sdk.CreateMultipartUploadCommand({
        Bucket: this.location.bucket,
        Key: this.key(name),
        ContentType: options.contentType,
        ContentEncoding: options.contentEncoding ?? undefined
      }))
      if (started.UploadId === undefined) throw new Error('the service gave no UploadId')
      return { name, uploadId: started.UploadId }
    } catch (err) {
      throw this.failure(err, `beginning the multipart upload of ${name}`)
    }
  }

  /** Sends one part (numbered from 1; every part but the last at least 5 MiB); `signal` cancels it. */
  async uploadPart (upload: MultipartUpload, partNumber: number, body: Uint8Array, signal?: AbortSignal): Promise<UploadedPart> {
    try {
      const { client, sdk } = await this.#connect()
      const sent = await client.send(new sdk.UploadPartCommand({
        Bucket: this.location.bucket,
        Key: this.key(upload.name),
        UploadId: upload.uploadId,
        PartNumber: partNumber,
        Body: body,
        ContentLength: body.length
      }), { abortSignal: signal })
      if (sent.ETag === undefined) throw new Error('the service gave no ETag for the part')
      return { partNumber, etag: sent.ETag }
    } catch (err) {
      throw this.failure(err, `sending part ${partNumber} of ${upload.name}`)
    }
  }

  /** Makes a multipart upload's object visible, all at once, from its parts. */
  async completeMultipart (upload: MultipartUpload, parts: readonly UploadedPart[]): Promise<void> {
    const ordered = [...parts].sort((a, b) => a.partNumber - b.partNumber)
    try {
      const { client, sdk } = await this.#connect()
      await client.send(new sdk.CompleteMultipartUploadCommand({
        Bucket: this.location.bucket,
        Key: this.key(upload.name),
        UploadId: upload.uploadId,
        MultipartUpload: { Parts: ordered.map(p => ({ PartNumber: p.partNumber, ETag: p.etag })) }
      }))
    } catch (err) {
      throw this.failure(err, `completing the multipart upload of ${upload.name}`)
    }
  }

  /** Aborts an unfinished multipart upload, freeing its parts; one already gone is success. */
  async abortUpload (upload: MultipartUpload): Promise<void> {
    try {
      const { client, sdk } = await this.#connect()
      await client.send(new sdk.AbortMultipartUploadCommand({ Bucket: this.location.bucket, Key: this.key(upload.name), UploadId: upload.uploadId }))
    } catch (err) {
      if (errorName(err) === 'NoSuchUpload') return
      throw this.failure(err, `aborting the unfinished upload of ${upload.name}`)
    }
  }

  /** Writes a small object from memory, in one PUT. */
  async put (name: string, body: Uint8Array | string, options: PutOptions): Promise<void> {
    try {
      const { client, sdk } = await this.#connect()
      await client.send(new sdk.PutObjectCommand({
        Bucket: this.location.bucket,
        Key: this.key(name),
        Body: body,
        ContentType: options.contentType,
        ContentEncoding: options.contentEncoding ?? undefined
      }))
    } catch (err) {
      throw this.failure(err, `writing ${name}`)
    }
  }

  /**
   * Writes an object from a stream: one PUT up to MULTIPART_PART_BYTES, a multipart upload above
   * (parts sent MULTIPART_QUEUE at a time). An upload that fails is aborted, so its parts do not
   * stay in the bucket; one cut short by a kill leaves an unfinished multipart upload, which no
   * reader sees.
   */
  async upload (name: string, body: Readable, options: PutOptions): Promise<void> {
    let connected
    try {
      connected = { ...await this.#connect(), lib: await import('@aws-sdk/lib-storage') }
    } catch (err) {
      body.destroy()
      throw this.failure(err, `uploading ${name}`)
    }
    const upload = new connected.lib.Upload({
      client: connected.client,
      params: {
        Bucket: this.location.bucket,
        Key: this.key(name),
        Body: body,
        ContentType: options.contentType,
        ContentEncoding: options.contentEncoding ?? undefined
      },
      partSize: MULTIPART_PART_BYTES,
      queueSize: MULTIPART_QUEUE,
      leavePartsOnError: false
    })
    try {
      await upload.done()
    } catch (err) {
      body.destroy()
      throw this.failure(err, `uploading ${name}`)
    }
  }

  /** Writes a file as an object (see upload). */
  async uploadFile (name: string, file: string, options: PutOptions): Promise<void> {
    await this.upload(name, createReadStream(file), options)
  }

  /** The bytes of an object, or undefined when there is none. For small objects. */
  async get (name: string): Promise<Buffer | undefined> {
    try {
      const { client, sdk } = await this.#connect()
      const object = await client.send(new sdk.GetObjectCommand({ Bucket: this.location.bucket, Key: this.key(name) }))
      if (object.Body === undefined) return Buffer.alloc(0)
      return Buffer.from(await object.Body.transformToByteArray())
    } catch (err) {
      if (errorName(err) === 'NoSuchKey') return undefined
      throw this.failure(err, `reading ${name}`)
    }
  }

  /**
   * Starts reading an object, whole or the inclusive byte range asked for; undefined when there
   * is none. A range past the end is the caller's to refuse: it knows the size from the database.
   * The caller must consume or destroy `body`, which holds a connection.
   */
  async read (name: string, range?: { start: number, end: number }): Promise<ObjectRead | undefined> {
    let object
    try {
      const { client, sdk } = await this.#connect()
      object = await client.send(new sdk.GetObjectCommand({
        Bucket: this.location.bucket,
        Key: this.key(name),
        Range: range === undefined ? undefined : `bytes=${range.start}-${range.end}`
      }))
    } catch (err) {
      if (errorName(err) === 'NoSuchKey') return undefined
      throw this.failure(err, `reading ${name}`)
    }
    const length = object.ContentLength ?? 0
    const body = object.Body as Readable | undefined
    if (body === undefined) throw this.failure(new Error('the service sent no body'), `reading ${name}`)
    // "bytes START-END/SIZE" when a range was answered; the whole object otherwise.
    const answered = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(object.ContentRange ?? '')
    if (answered === null) return { size: length, start: 0, end: length - 1, body }
    return { size: Number(answered[3]), start: Number(answered[1]), end: Number(answered[2]), body }
  }

  /**
   * A URL that lets whoever holds it GET the object for `expiresInSeconds`, signed here with the
   * credentials (no request is sent; the object may not exist).
   */
  async presignedGet (name: string, expiresInSeconds: number): Promise<string> {
    try {
      const { client, sdk } = await this.#connect()
      const { getSignedUrl } = await import('@aws-sdk/s3-request-presigner')
      return await getSignedUrl(client, new sdk.GetObjectCommand({ Bucket: this.location.bucket, Key: this.key(name) }),
        { expiresIn: expiresInSeconds })
    } catch (err) {
      throw this.failure(err, `signing a URL for ${name}`)
    }
  }

  /**
   * Copies an object inside the bucket, server-side (S3 copies up to 5 GiB in one request), with
   * the given content type; the copy appears whole or not at all.
   */
  async copy (from: string, to: string, options: PutOptions): Promise<void> {
    try {
      const { client, sdk } = await this.#connect()
      await client.send(new sdk.CopyObjectCommand({
        Bucket: this.location.bucket,
        CopySource: `${this.location.bucket}/${this.key(from).split('/').map(encodeURIComponent).join('/')}`,
        Key: this.key(to),
        MetadataDirective: 'REPLACE',
        ContentType: options.contentType,
        ContentEncoding: options.contentEncoding ?? undefined
      }))
    } catch (err) {
      throw this.failure(err, `copying ${from} to ${to}`)
    }
  }

  async delete (name: string): Promise<void> {
    try {
      const { client, sdk } = await this.#connect()
      await client.send(new sdk.DeleteObjectCommand({ Bucket: this.location.bucket, Key: this.key(name) }))
    } catch (err) {
      throw this.failure(err, `deleting ${name}`)
    }
  }

  /** Closes the client's connections. */
  close (): void {
    this.#closed = true
    this.#connection?.then(({ client }) => client.destroy(), () => {})
  }

  /** The client, made (and the SDK loaded) at the first call. */
  async #connect (): Promise<{ client: S3Client, sdk: Sdk }> {
    if (this.#closed) throw new Error('the S3 client was closed')
    this.#connection ??= loadSdk().then(sdk => ({ client: new sdk.S3Client(this.#config), sdk }))
    return await this.#connection
  }

  /** What went wrong, as the one error kind, with what the operator can do about it. */
  private failure (err: unknown, what: string): NarwhalError {
    if (err instanceof NarwhalError) return err
    const bucket = this.location.bucket
    const name = errorName(err)
    const status = statusOf(err)
    const where = this.location.endpoint ?? `AWS S3 (${this.location.region})`
    let reason: string
    if (name === 'NoSuchBucket' || (what === 'checking the bucket' && status === 404)) {
      reason = `bucket ${bucket} does not exist at ${where}; narwhal never creates buckets: create it, then run again`
    } else if (name === 'CredentialsProviderError') {
      reason = 'no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE (or profile= in the storage URL)'
    } else if (status === 403 || name === 'AccessDenied' || name === 'InvalidAccessKeyId' || name === 'SignatureDoesNotMatch') {
      reason = `${where} refused the credentials for bucket ${bucket} (${name ?? status}): check the AWS keys or profile and the bucket's policy`
    } else if (networkCode(err) !== undefined) {
      reason = `cannot reach the object store at ${where} (${networkCode(err) ?? ''})`
    } else {
      reason = `the object store answered ${name ?? 'an error'}${status === undefined ? '' : ` (HTTP ${status})`}: ${(err as Error).message ?? String(err)}`
    }
    return new NarwhalError('NARWHAL_STORAGE_UNAVAILABLE', `${what} in ${this.describe()}: ${reason}`, { cause: err })
  }
}

function errorName (err: unknown): string | undefined {
  return typeof err === 'object' && err !== null && typeof (err as { name?: unknown }).name === 'string' ? (err as { name: string }).name : undefined
}

function statusOf (err: unknown): number | undefined {
  return (err as { $metadata?: { httpStatusCode?: number } } | null)?.$metadata?.httpStatusCode
}

/** ECONNREFUSED, ENOTFOUND, ETIMEDOUT and the like, from the error or its cause. */
function networkCode (err: unknown): string | undefined {
  for (let e = err, depth = 0; typeof e === 'object' && e !== null && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    const code = (e as { code?: unknown }).code
    if (typeof code === 'string' && /^E[A-Z]+$/.test(code)) return code
    if (errorName(e) === 'TimeoutError') return 'timed out'
  }
  return undefined
}
