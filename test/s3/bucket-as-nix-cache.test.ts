/**
 * The bucket an S3BlobStore writes is itself a Nix binary cache: stock Nix (the host's 2.8, no
 * narwhal in between) substitutes a closure from the bucket's plain HTTP endpoint, with a large
 * NAR that went up as a multipart upload while narwhal verified it, and checks it against the
 * uploader's key.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readdirSync, readFileSync } from 'node:fs'
import path from 'node:path'
import { Readable } from 'node:stream'
import { cacheInfoText } from '../../src/nix/binary-cache-files.js'
import { parseNarInfo } from '../../src/nix/narinfo.js'
import { encodeNix32 } from '../../src/nix/nix32.js'
import { ingestNar } from '../../src/storage/nar-ingest.js'
import { S3BlobStore } from '../../src/storage/s3-blob-store.js'
import { PART_BYTES } from '../../src/storage/s3-pending-blob.js'
import { buildClosure, nixKeyPair, nixOk, tempDir } from '../helpers/nix.js'
import { createBucket, listBucket, makePublicRead, s3Engine, storageUrl, unfinishedUploads } from '../helpers/s3.js'

const engine = s3Engine()
Object.assign(process.env, { AWS_ACCESS_KEY_ID: engine.accessKey, AWS_SECRET_ACCESS_KEY: engine.secretKey })

test('stock Nix substitutes a closure from the HTTP endpoint of the bucket narwhal wrote', async (t) => {
  const key = await nixKeyPair('test-uploader-1')
  // Random bytes do not compress: the data path's NAR is larger than a part, so multipart.
  const closure = await buildClosure({ dataBytes: 2 * PART_BYTES })
  // Nix's own signed NARs and narinfos, as an uploader sends them.
  const source = tempDir('narwhal-file-cache-')
  await nixOk(['copy', '--to', `file://${source}?compression=zstd&secret-key=${key.secretFile}`, closure.top])

  const bucket = await createBucket(engine)
  const store = await S3BlobStore.open(storageUrl(engine, bucket), { redirectNars: false })
  t.after(() => store.close())
  await store.publishCacheInfo(cacheInfoText(40))
  const narinfos = readdirSync(source).filter(name => name.endsWith('.narinfo'))
  assert.equal(narinfos.length, 3)
  let largest = 0
  for (const file of narinfos) {
    const text = readFileSync(path.join(source, file), 'utf8')
    const info = parseNarInfo(text)
    const body = readFileSync(path.join(source, info.url))
    largest = Math.max(largest, body.length)
    // Verified as an upload is (storage/nar-ingest.ts), committed as the cache layer commits it.
    const chunks = (function * () { for (let i = 0; i < body.length; i += 65_536) yield body.subarray(i, i + 65_536) })()
    const { nar, blob } = await ingestNar(Readable.from(chunks), encodeNix32(info.fileHash ?? Buffer.alloc(0)), store,
      { maxBytes: 1 << 30, maxNarSize: 1 << 30, declaredBytes: body.length, reserveBytes: 0 })
    try {
      assert.equal(nar.compression, info.compression)
      await blob.commit(nar)
    } finally {
      await blob.discard()
    }
    // The narinfo only after its NAR.
    await store.publishNarinfo(file.slice(0, 32), text)
  }
  assert.ok(largest > PART_BYTES, 'one NAR went up in parts')
  assert.deepEqual(await unfinishedUploads(engine, bucket), [])
  const keys = [...(await listBucket(engine, bucket)).keys()]
  assert.equal(keys.filter(k => /^nar\/[0-9a-df-np-sv-z]{52}\.nar\.zst$/.test(k)).length, 3, keys.join(' '))

  await makePublicRead(engine, bucket)
  const cacheUrl = `${engine.endpoint}/${bucket}`
  const target = tempDir('narwhal-store-')
  const trust = [`trusted-public-keys = ${key.publicKey}`]
  await nixOk(['copy', '--from', cacheUrl, '--to', target, closure.top], { config: trust })
  assert.ok(readFileSync(path.join(target, closure.data, 'random.bin')).equals(readFileSync(path.join(closure.data, 'random.bin'))))
  await nixOk(['store', 'verify', '--recursive', '--store', target, closure.top], { config: trust })
})
