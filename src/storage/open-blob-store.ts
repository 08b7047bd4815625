/**
 * The one place that turns the storage setting (config `storage`: `--storage`,
 * NARWHAL_STORAGE_URL) into a BlobStore: no URL is the data folder's store, an `s3://` URL a
 * bucket's (storage/s3-url.ts says what it may hold). No request is made here: the caller runs
 * check() (and, for the folder, init()) where it opens the cache.
 */
import type { BlobStore } from './blob-store.js'
import { FileBlobStore } from './file-blob-store.js'
import type { Layout } from './layout.js'

export interface StorageSetting {
  /** null: the data folder. */
  url: string | null
  /** Answer NAR downloads with a presigned URL (S3 only). */
  redirectNars: boolean
}

export interface OpenedBlobStore {
  blobs: BlobStore
  /** The folder's store when it is one (init() makes its folders). */
  folder: FileBlobStore | undefined
  /** Releases the store's connections (an S3 client keeps sockets that would hold a command open). */
  close: () => void
}

/**
 * Throws NARWHAL_STORAGE_URL_INVALID, naming the part at fault, for a URL that is not a usable
 * s3:// URL. The bucket's store is loaded only when a URL names one: with the data folder, a
 * process that never takes an upload (the primary of `serve --workers N`) is spared it and the
 * NAR decoders it imports.
 */
export async function openBlobStore (layout: Layout, storage: StorageSetting): Promise<OpenedBlobStore> {
  if (storage.url === null) {
    const folder = new FileBlobStore(layout)
    return { blobs: folder, folder, close: () => {} }
  }
  const { S3BlobStore } = await import('./s3-blob-store.js')
  const bucket = S3BlobStore.fromUrl(storage.url, { redirectNars: storage.redirectNars })
  return { blobs: bucket, folder: undefined, close: () => bucket.close() }
}
