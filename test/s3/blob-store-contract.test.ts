/**
 * The BlobStore contract (test/helpers/blob-store-contract.ts) against an S3BlobStore on the real
 * engine, each test in a bucket of its own. Begun without a file hash, as the contract does, a
 * body larger than a part goes through tmp/ and a server-side copy.
 */
import { S3BlobStore } from '../../src/storage/s3-blob-store.js'
import { blobStoreContract } from '../helpers/blob-store-contract.js'
import { createBucket, s3Engine, storageUrl } from '../helpers/s3.js'

const engine = s3Engine()
Object.assign(process.env, { AWS_ACCESS_KEY_ID: engine.accessKey, AWS_SECRET_ACCESS_KEY: engine.secretKey })

blobStoreContract('s3', async () => {
  const store = await S3BlobStore.open(storageUrl(engine, await createBucket(engine)), { redirectNars: false })
  return { store, close: async () => store.close() }
})
