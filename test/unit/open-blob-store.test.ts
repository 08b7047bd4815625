/**
 * storage/open-blob-store.ts: the storage setting names the data folder or a bucket, and a bad
 * URL is refused by name before anything is asked of a service.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { isNarwhalError } from '../../src/errors.js'
import { layoutFor } from '../../src/storage/layout.js'
import { openBlobStore } from '../../src/storage/open-blob-store.js'

const layout = layoutFor('/nonexistent/narwhal-data')

test('no storage URL is the data folder; an s3:// URL is the bucket it names', async () => {
  const folder = await openBlobStore(layout, { url: null, redirectNars: false })
  assert.equal(folder.blobs.kind, 'folder')
  assert.ok(folder.folder !== undefined)
  folder.close()
  const bucket = await openBlobStore(layout, { url: 's3://team-cache?endpoint=127.0.0.1:9&scheme=http&prefix=a/b', redirectNars: true })
  assert.equal(bucket.blobs.kind, 's3')
  assert.equal(bucket.folder, undefined)
  assert.equal(bucket.blobs.where({ fileHash: '1'.repeat(52), compression: 'xz' }), `s3://team-cache/a/b/nar/${'1'.repeat(52)}.nar.xz`)
  bucket.close()
})

test('a storage URL that is not a usable s3:// URL is refused, naming what is wrong', async () => {
  for (const [url, reason] of [
    ['/var/lib/narwhal', /expected s3:\/\/BUCKET/],
    ['s3://Bad_Bucket', /not a valid S3 bucket name/],
    ['s3://cache?endpont=x', /unknown parameter "endpont"/]
  ] as const) {
    await assert.rejects(openBlobStore(layout, { url, redirectNars: false }),
      (err: unknown) => isNarwhalError(err) && err.code === 'NARWHAL_STORAGE_URL_INVALID' && reason.test(err.message), url)
  }
})
