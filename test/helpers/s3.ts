/**
 * The real S3 service for the S3 tests: Ceph's RADOS Gateway, started by test/run.sh through
 * scripts/test-engines/ceph.sh, which passes its endpoint and the keys of its S3 user in
 * NARWHAL_TEST_S3_ENDPOINT, NARWHAL_TEST_S3_ACCESS_KEY and NARWHAL_TEST_S3_SECRET_KEY.
 *
 * Buckets are made with the SDK (narwhal never creates one), each test its own. Locating the
 * engine and making a bucket live in scripts/test-engines/engines.ts (the benchmarks use them too).
 */
import { AbortMultipartUploadCommand, DeleteBucketCommand, DeleteObjectCommand, ListMultipartUploadsCommand, ListObjectsV2Command, PutBucketPolicyCommand } from '@aws-sdk/client-s3'
import { s3Client, type S3Engine } from '../../scripts/test-engines/engines.js'

export { createBucket, s3Client, s3Engine, storageUrl, type S3Engine } from '../../scripts/test-engines/engines.js'

/** Lets anyone GET the bucket's objects over plain HTTP (ENDPOINT/BUCKET/KEY), as a public cache is read. */
export async function makePublicRead (engine: S3Engine, bucket: string): Promise<void> {
  const policy = {
    Version: '2012-10-17',
    Statement: [{ Effect: 'Allow', Principal: '*', Action: ['s3:GetObject'], Resource: [`arn:aws:s3:::${bucket}/*`] }]
  }
  const client = s3Client(engine)
  try {
    await client.send(new PutBucketPolicyCommand({ Bucket: bucket, Policy: JSON.stringify(policy) }))
  } finally { client.destroy() }
}

export interface ListedObject { size: number, etag: string, lastModified: number }

/** Every object in the bucket by key. */
export async function listBucket (engine: S3Engine, bucket: string): Promise<Map<string, ListedObject>> {
  const client = s3Client(engine)
  const objects = new Map<string, ListedObject>()
  try {
    let token: string | undefined
    do {
      const page = await client.send(new ListObjectsV2Command({ Bucket: bucket, ContinuationToken: token }))
      for (const o of page.Contents ?? []) {
        objects.set(o.Key ?? '', { size: o.Size ?? -1, etag: o.ETag ?? '', lastModified: o.LastModified?.getTime() ?? 0 })
      }
      token = page.IsTruncated === true ? page.NextContinuationToken : undefined
    } while (token !== undefined)
  } finally { client.destroy() }
  return objects
}

/** The keys of the bucket's multipart uploads begun and neither completed nor aborted. */
export async function unfinishedUploads (engine: S3Engine, bucket: string): Promise<string[]> {
  const client = s3Client(engine)
  try {
    const page = await client.send(new ListMultipartUploadsCommand({ Bucket: bucket }))
    return (page.Uploads ?? []).map(u => u.Key ?? '')
  } finally { client.destroy() }
}

/** The environment for a narwhal command talking to the engine: the S3 user's keys, nothing else of AWS. */
export function awsEnv (engine: S3Engine): NodeJS.ProcessEnv {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('AWS_') && !k.startsWith('NARWHAL_')))
  return { ...env, AWS_ACCESS_KEY_ID: engine.accessKey, AWS_SECRET_ACCESS_KEY: engine.secretKey }
}

/** Deletes every object and unfinished upload of a test's bucket, then the bucket. */
export async function removeBucket (engine: S3Engine, bucket: string): Promise<void> {
  const client = s3Client(engine)
  try {
    for (const key of (await listBucket(engine, bucket)).keys()) await client.send(new DeleteObjectCommand({ Bucket: bucket, Key: key }))
    const uploads = await client.send(new ListMultipartUploadsCommand({ Bucket: bucket }))
    for (const u of uploads.Uploads ?? []) await client.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: u.Key, UploadId: u.UploadId }))
    await client.send(new DeleteBucketCommand({ Bucket: bucket }))
  } finally { client.destroy() }
}
