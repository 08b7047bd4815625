/**
 * A process that begins a large NAR upload into a bucket and then waits to be killed: what a
 * replica killed mid-upload leaves behind (test/s3/s3-blob-store.test.ts). Prints "parts sent"
 * once its first parts are in the bucket.
 *
 *   node dist/test/helpers/s3-upload-child.js STORAGE_URL
 */
import { createHash, randomBytes } from 'node:crypto'
import { encodeNix32 } from '../../src/nix/nix32.js'
import { S3BlobStore } from '../../src/storage/s3-blob-store.js'
import { PART_BYTES } from '../../src/storage/s3-pending-blob.js'
import { nar } from '../unit/nix-test-helpers.js'

const url = process.argv[2]
if (url === undefined) throw new Error('usage: s3-upload-child.js STORAGE_URL')
const store = await S3BlobStore.open(url, { redirectNars: false })
const body = nar({ type: 'regular', contents: randomBytes(3 * PART_BYTES) })
const blob = await store.begin(encodeNix32(createHash('sha256').update(body).digest()))
// Two whole parts and a little, then finish() would send the rest: never reached.
await blob.write(body.subarray(0, PART_BYTES))
await blob.write(body.subarray(PART_BYTES, 2 * PART_BYTES))
await blob.write(body.subarray(2 * PART_BYTES, 2 * PART_BYTES + 1000))
// The parts may still be in flight; the upload they belong to is begun once it is listed.
async function begun (): Promise<boolean> {
  for await (const upload of store.objects.unfinishedUploads('nar/')) if (upload.name.startsWith('nar/')) return true
  return false
}
while (!await begun()) await new Promise(resolve => setTimeout(resolve, 20))
process.stdout.write('parts sent\n')
setInterval(() => {}, 1000)
