/**
 * S3 blob store micro-benchmark against a real S3 service (Ceph's RGW from
 * scripts/test-engines/ceph.sh): what the store's own upload and read paths give, beside the SDK's
 * lib-storage Upload and a plain fetch() of a presigned URL, without narwhal's server.
 *
 *   scripts/test-engines/ceph.sh start DIR && source DIR/env
 *   node dist/bench/s3-blob-store.js
 *
 *   BENCH_RUNS=5       rounds (the variants alternate within each round; medians are printed)
 *   BENCH_LARGE_MB=256 the large NAR
 *   BENCH_SMALL=200    small NARs (32 KiB each) per round
 *
 * Rows: a large NAR up through S3PendingBlob (8 MiB parts, 4 in flight) and through lib-storage
 * (16 MiB parts, 4 in flight); the same NAR down through open().chunks() and through fetch() of
 * a presigned URL; small NARs one after another: commit (one PUT) and open + read. Prints a
 * table; never asserts on time.
 */
import { createHash, randomBytes } from 'node:crypto'
import { Readable } from 'node:stream'
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3'
import { narString } from '../src/nix/nar-encoding.js'
import { encodeNix32 } from '../src/nix/nix32.js'
import type { NarName } from '../src/storage/blob-store.js'
import { S3BlobStore } from '../src/storage/s3-blob-store.js'

const endpoint = process.env.NARWHAL_TEST_S3_ENDPOINT
const accessKey = process.env.NARWHAL_TEST_S3_ACCESS_KEY
const secretKey = process.env.NARWHAL_TEST_S3_SECRET_KEY
if (endpoint === undefined || accessKey === undefined || secretKey === undefined) {
  throw new Error('start an engine first: scripts/test-engines/ceph.sh start DIR && source DIR/env')
}
const RUNS = Number(process.env.BENCH_RUNS ?? 5)
const LARGE = Number(process.env.BENCH_LARGE_MB ?? 256) << 20
const SMALL = Number(process.env.BENCH_SMALL ?? 200)
const CHUNK = 65_536

Object.assign(process.env, { AWS_ACCESS_KEY_ID: accessKey, AWS_SECRET_ACCESS_KEY: secretKey })
const bucket = `narwhal-bench-${randomBytes(4).toString('hex')}`
const admin = new S3Client({ region: 'us-east-1', endpoint, forcePathStyle: true, credentials: { accessKeyId: accessKey, secretAccessKey: secretKey } })
await admin.send(new CreateBucketCommand({ Bucket: bucket }))
admin.destroy()
const store = await S3BlobStore.open(`s3://${bucket}?endpoint=${endpoint.replace(/^http:\/\//, '')}&scheme=http`, { redirectNars: false })
const redirecting = await S3BlobStore.open(`s3://${bucket}?endpoint=${endpoint.replace(/^http:\/\//, '')}&scheme=http`, { redirectNars: true })

/** Bytes that start like an uncompressed NAR (the store names the object from its first bytes). */
function narLike (bytes: number): { body: Buffer, name: NarName } {
  const body = Buffer.concat([narString('nix-archive-1'), randomBytes(bytes)])
  return { body, name: { fileHash: encodeNix32(createHash('sha256').update(body).digest()), compression: 'none' } }
}

async function put (body: Buffer, name: NarName): Promise<void> {
  const blob = await store.begin(name.fileHash)
  try {
    for (let i = 0; i < body.length; i += CHUNK) await blob.write(body.subarray(i, i + CHUNK))
    await blob.finish()
    await blob.commit(name)
  } finally {
    await blob.discard()
  }
}

async function timed (fn: () => Promise<unknown>): Promise<number> {
  const start = process.hrtime.bigint()
  await fn()
  return Number(process.hrtime.bigint() - start) / 1e9
}

function median (values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.floor(sorted.length / 2)] ?? NaN
}

const rows = new Map<string, number[]>()
function record (row: string, value: number): void {
  rows.set(row, [...(rows.get(row) ?? []), value])
}

const large = narLike(LARGE)
const mb = large.body.length / 1e6
for (let round = 0; round < RUNS; round++) {
  const order = round % 2 === 0 ? ['pending', 'lib'] : ['lib', 'pending']
  for (const variant of order) {
    if (variant === 'pending') {
      record('large up: S3PendingBlob (8 MiB x 4), MB/s', mb / await timed(async () => await put(large.body, large.name)))
    } else {
      const chunks = function * (): Generator<Buffer> { for (let i = 0; i < large.body.length; i += CHUNK) yield large.body.subarray(i, i + CHUNK) }
      record('large up: lib-storage Upload (16 MiB x 4), MB/s', mb / await timed(async () =>
        await store.objects.upload(`bench/lib-${round}.nar`, Readable.from(chunks()), { contentType: 'application/x-nix-nar' })))
    }
  }
  for (const variant of round % 2 === 0 ? ['stream', 'presigned'] : ['presigned', 'stream']) {
    if (variant === 'stream') {
      record('large down: open().chunks(), MB/s', mb / await timed(async () => {
        const read = await store.open(large.name)
        if (read?.kind !== 'body') throw new Error('not there')
        for await (const chunk of read.chunks()) if (chunk.length < 0) break
      }))
    } else {
      record('large down: fetch() of a presigned URL, MB/s', mb / await timed(async () => {
        const read = await redirecting.open(large.name)
        if (read?.kind !== 'redirect') throw new Error('no redirect')
        const response = await fetch(read.url)
        for await (const chunk of response.body ?? []) if (chunk.length < 0) break
      }))
    }
  }
  const smalls = Array.from({ length: SMALL }, () => narLike(32 * 1024))
  record('small (32 KiB) commit, ms each', 1000 * await timed(async () => { for (const s of smalls) await put(s.body, s.name) }) / SMALL)
  record('small (32 KiB) open + read, ms each', 1000 * await timed(async () => {
    for (const s of smalls) {
      const read = await store.open(s.name)
      if (read?.kind !== 'body') throw new Error('not there')
      await read.read()
    }
  }) / SMALL)
}

console.log(`S3 blob store against ${endpoint}, ${RUNS} rounds, large NAR ${(LARGE / 2 ** 20).toFixed(0)} MiB, ${SMALL} small NARs per round; medians`)
for (const [row, values] of rows) console.log(`${row.padEnd(52)} ${median(values).toFixed(1).padStart(8)}   (${values.map(v => v.toFixed(1)).join(' ')})`)
store.close()
redirecting.close()
