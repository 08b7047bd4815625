/**
 * Where NAR files are kept: the seam between the cache layer and a place for bytes (today's data
 * folder, storage/file-blob-store.ts; an S3 bucket). Knows nothing of HTTP or SQL, and no file
 * descriptor or path leaves it: names go in, bytes and bodies to send come out.
 *
 * Objects are content-addressed: `nar/<fileHash>.nar<ext>` in a bucket, `store/nar/<h0h1>/<fileHash>`
 * in the folder, named by the sha256 (52 nix32 characters, validated by the caller) of their
 * bytes (see NarName). An object is visible only once committed, and committed only after its bytes verified:
 *
 *   const blob = await blobs.begin(fileHash)
 *   blob.write(chunk) ...            (awaiting any promise it returns: back pressure)
 *   await blob.finish()              (every byte durable where it is kept; still invisible)
 *   await blob.commit(nar)           (visible under its name; an existing object is success)
 *   await blob.discard()             (always, in a finally: drops an uncommitted blob; no-op after commit)
 *
 * storage/nar-ingest.ts ingestNar(body, fileHash, blobs, options) does the first three steps
 * while it verifies, and returns `{ nar, blob }`: the measurements and the finished blob, for
 * the cache layer to commit (cache/store-nar.ts) and discard.
 *
 * Failures of the store itself (a bucket that cannot be reached) are NarwhalError
 * NARWHAL_STORAGE_UNAVAILABLE; a full disk on upload is NARWHAL_INSUFFICIENT_STORAGE.
 */
import type { Writable } from 'node:stream'

/**
 * Which object: its file hash, and its compression (as in the nar_files row: 'xz', 'none', …),
 * which a bucket needs for the name Nix gives it (nar/<fileHash>.nar.xz; nix/nar-url.ts narUrl).
 * A NarFileRow or an IngestedNar is one.
 */
export interface NarName { fileHash: string, compression: string }

/** An object being written: invisible to readers until committed. */
export interface PendingBlob {
  /**
   * Adds `chunk`. Returns a promise only when the caller must wait before the next write (back
   * pressure); a write error surfaces here, in a later write or in finish(). The chunk is held by
   * reference until written: the caller must not change it.
   */
  write: (chunk: Uint8Array) => Promise<void> | undefined
  /** Every byte written is durable where it is kept (fsync; an uploaded part); call once, after the last write. */
  finish: () => Promise<void>
  /**
   * Makes the finished bytes visible as the object `name` (whose file hash the caller verified
   * they hash to). An object already there under that name is success (same name, same bytes).
   * `durable: false` lets the folder leave its directory entry to the kernel's next write-back:
   * for a NAR that can be fetched again if a power cut loses it (pulled from an upstream).
   */
  commit: (name: NarName, options?: { durable?: boolean }) => Promise<void>
  /** Drops the bytes if not committed. Idempotent; safe after any failure; a no-op after commit. */
  discard: () => Promise<void>
}

/** An inclusive byte range of an object, as in Content-Range: `start`..`end`, both < size. */
export interface ByteRange { start: number, end: number }

/**
 * A stored object opened for reading: its size, and its bytes (the range asked for, or all),
 * sent at most once by one of read, send or chunks. Whoever opens it must end it: by one of those
 * three, or by close() (a HEAD, a 416, a size that disagrees with the metadata).
 */
export interface BlobBody {
  readonly kind: 'body'
  /** The whole object's size, whatever range was asked for: compare it with the recorded size. */
  readonly size: number
  /** How many bytes the body holds: the range's length, or `size`. */
  readonly length: number
  /** The bytes in one buffer: for small bodies (at most 64 KiB is what the server asks this for). */
  read: () => Promise<Buffer>
  /**
   * Writes the bytes to `sink` (an HTTP response whose headers are set) and ends it. Never
   * throws: a sink that closes stops it; a read that fails after the first byte destroys the sink
   * (a truncated body). Resolves with the error that cut the body short, for the log, if any.
   * A chunk's memory may be reused once the sink's write callback ran: the sink must have taken
   * (copied) it by then, as a socket does.
   */
  send: (sink: Writable) => Promise<Error | undefined>
  /** The bytes as a stream of chunks (fsck's content check, an export). */
  chunks: () => AsyncIterable<Buffer>
  /** Releases the object unsent. Idempotent; a no-op once read, send or chunks took it. */
  close: () => void
}

/** What open() finds: nothing, a body to send, or a URL the client should fetch instead. */
export type BlobRead =
  | BlobBody
  /** A short-lived URL (a presigned S3 GET) that serves the object (the server answers a redirect). */
  | { kind: 'redirect', url: string }

/** An object as list() finds it. */
export interface StoredBlob {
  fileHash: string
  /** From the object's name, where it has one (a bucket); undefined in the folder. */
  compression: string | undefined
  size: number
  /** When it was last written (unix ms): fsck leaves young objects without a row alone, as uploads in flight. */
  modifiedAt: number
}

/** Something in the store that is not a committed object (what fsck reports besides the objects). */
export interface Leftover {
  /** 'stale-temp': an upload a crash interrupted; 'stray': anything else that is not an object; 'in-flight': a young temp object. */
  kind: 'stale-temp' | 'stray' | 'in-flight'
  /** Where it is, for a person: a path under the data folder, or an object key. */
  subject: string
  reason: string
  /** False when fsck --repair must leave it for a person (a directory in store/nar). */
  removable: boolean
}

/**
 * Reads answered without waiting, for the server's fast path (server/fast-reads.ts): present when
 * the store is the local folder, where a read is a few system calls that take microseconds once
 * the inode is cached, and a promise or a trip through the thread pool would cost more.
 */
export interface ImmediateReads {
  /** The object's size, or undefined when it is missing. */
  size: (fileHash: string) => number | undefined
  /** The whole object when it is there with exactly `size` bytes; undefined otherwise. */
  readWhole: (fileHash: string, size: number) => Buffer | undefined
}

/** A narinfo object as PublishedNarinfos.list() finds it. */
export interface PublishedNarinfo {
  hashPart: string
  /** The MD5 (hex) of its bytes when the store knows it without reading them (an S3 ETag of a plain PUT). */
  md5: string | undefined
}

/**
 * The narinfos a store that is itself a Nix cache holds (`<hashPart>.narinfo` in a bucket): what
 * fsck compares with the narinfo rows. Absent for the folder, which publishes none.
 */
export interface PublishedNarinfos {
  /** Every narinfo object, in no particular order. */
  list: () => AsyncIterable<PublishedNarinfo>
  /** The text of `<hashPart>.narinfo`, or undefined when there is none. */
  read: (hashPart: string) => Promise<string | undefined>
  /** Where `<hashPart>.narinfo` is, for a person (fsck's reports). */
  where: (hashPart: string) => string
}

export interface BlobStore {
  /** `folder` or `s3`, for messages and metrics. */
  readonly kind: string
  /** Where it is, for a person (a folder, `s3://bucket/prefix`). */
  describe: () => string
  /** Where an object is, for a person (fsck's reports): a file's path, an object's key. Never opened by anyone. */
  where: (name: { fileHash: string, compression: string | undefined }) => string
  /**
   * Throws when the store cannot be judged or used: written by a layout version this one does not
   * know, a bucket that cannot be reached. fsck calls it first.
   */
  check: () => Promise<void>
  /**
   * A new object to write into (see PendingBlob). `expectedFileHash`, the hash the upload claims,
   * lets a bucket send a large NAR's parts under its final name while it arrives; without it they
   * go under a temp name and are copied into place at commit.
   */
  begin: (expectedFileHash?: string) => Promise<PendingBlob>
  /**
   * Opens the object for reading: undefined when missing. With `range`, the body holds only
   * those bytes (its `size` is still the whole object's). May answer a redirect instead (S3 with
   * storage.redirectNars), for which nothing was checked: the caller trusts its metadata.
   */
  open: (name: NarName, range?: ByteRange) => Promise<BlobRead | undefined>
  /** The object's size (stat, HEAD), or undefined when it is missing. */
  size: (name: NarName) => Promise<number | undefined>
  /** Removes the object; a missing one is success. Without its compression (list() in the folder) a bucket looks for it by hash. */
  delete: (name: { fileHash: string, compression: string | undefined }) => Promise<void>
  /** Every committed object, in no particular order (fsck, gc). */
  list: () => AsyncIterable<StoredBlob>
  /**
   * Refuses (NARWHAL_INSUFFICIENT_STORAGE) an upload of `bytes` that would leave less than
   * `reserve` bytes free where objects are kept. A bucket always has room.
   */
  ensureRoom: (bytes: number, reserve: number) => Promise<void>
  /**
   * Removes what interrupted uploads left (the folder: everything in store/tmp; S3: unfinished
   * multipart uploads and temp objects older than a grace). Only while no process writes to the
   * store's temp space: `serve` before it listens, the primary of `serve --workers N` before its
   * first worker starts. A bucket's sweep may also run later (the grace spares uploads in flight):
   * cli/storage-upkeep.ts retries it there when the bucket could not be reached at start.
   */
  sweep: () => Promise<void>
  /**
   * What fsck reports besides the objects: uploads left by a crash, and things that are not
   * objects. Anything touched since `youngSince` (unix ms) is 'in-flight'.
   */
  leftovers: (youngSince: number) => AsyncIterable<Leftover>
  /** Removes a removable leftover that leftovers() reported, by its subject (fsck --repair). */
  removeLeftover: (subject: string) => Promise<void>
  /** Present for the local folder only (see ImmediateReads). */
  readonly immediate?: ImmediateReads
  /**
   * The bucket as a Nix binary cache (S3): writes `<hashPart>.narinfo`, only after its NAR is
   * committed and its row live. No-op for the folder (the server serves narinfos from the database).
   */
  publishNarinfo: (hashPart: string, text: string) => Promise<void>
  /** Present when the store holds published narinfos (S3): listing and reading them back (fsck). */
  readonly published?: PublishedNarinfos
  /** Removes `<hashPart>.narinfo` (gc, before it deletes the NAR). No-op for the folder. */
  unpublishNarinfo: (hashPart: string) => Promise<void>
  /** Writes `nix-cache-info`. No-op for the folder. */
  publishCacheInfo: (text: string) => Promise<void>
}
