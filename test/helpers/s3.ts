/**
 * The real S3 service for the S3 tests: Ceph's RADOS Gateway, started by test/run.sh through
 * scripts/test-engines/ceph.sh, which passes its endpoint and the keys of its S3 user in
 * NARWHAL_TEST_S3_ENDPOINT, NARWHAL_TEST_S3_ACCESS_KEY and NARWHAL_TEST_S3_SECRET_KEY.
 *
 * Buckets are made here with the SDK (narwhal never creates one), each test its own.
 */
import { randomBytes } from 'node:crypto'
import { AbortMultipartUploadCommand, CreateBucketCommand, DeleteBucketCommand, DeleteObjectCommand, ListMultipartUploadsCommand, ListObjectsV2Command, PutBucketPolicyCommand, S3Client } from '@aws-sdk/client-s3'

export interface S3Engine {
  /** http://127.0.0.1:PORT */
  endpoint: string
  accessKey: string
  secretKey: string
}

export function s3Engine (): S3Engine {
  const endpoint = process.env.NARWHAL_TEST_S3_ENDPOINT
  const accessKey = process.env.NARWHAL_TEST_S3_ACCESS_KEY
  const secretKey = process.env.NARWHAL_TEST_S3_SECRET_KEY
  if (endpoint === undefined || accessKey === undefined || secretKey === undefined) {
    throw new Error('the S3 tests need a running S3 engine: run them through test/run.sh, or start one with ' +
      '`scripts/test-engines/ceph.sh start DIR` and `source DIR/env` first')
  }
  return { endpoint, accessKey, secretKey }
}

export function s3Client (engine: S3Engine): S3Client {
  return new S3Client({
    region: 'us-east-1',
    endpoint: engine.endpoint,
    forcePathStyle: true,
    credentials: { accessKeyId: engine.accessKey, secretAccessKey: engine.secretKey },
    requestChecksumCalculation: 'WHEN_REQUIRED'
  })
}

/** A new empty bucket with a unique name. */
export async function createBucket (engine: S3Engine, label = 'narwhal-test'): Promise<string> {
  const bucket = `${label}-${randomBytes(6).toString('hex')}`
  const client = s3Client(engine)
  try {
    await client.send(new CreateBucketCommand({ Bucket: bucket }))
  } finally { client.destroy() }
  return bucket
}

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

/** The storage URL of a bucket on the engine, as `narwhal export --storage` takes it. */
export function storageUrl (engine: S3Engine, bucket: string, extra = ''): string {
  return `s3://${bucket}?endpoint=${engine.endpoint.replace(/^http:\/\//, '')}&scheme=http&region=us-east-1${extra}`
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
