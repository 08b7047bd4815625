/**
 * Rule (fact sheet §13.19): several builders push the same NAR at the same moment. Every PUT
 * succeeds, and the store ends with exactly one file and one row for it, and no temp files.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { startServer } from '../helpers/server.js'
import { freshNar, get, makeNarinfo, put, rowCounts } from '../helpers/upload.js'
import { generateKeyPair } from '../../src/signing/keys.js'

test('8 concurrent PUTs of the same NAR all succeed and leave one file, one row, no temp files', async (t) => {
  const server = await startServer(t)
  // Large enough (~2 MiB, incompressible) that the uploads overlap in time.
  const nar = await freshNar('zstd', { randomBytes: 2 * 1024 * 1024 })
  const token = await server.token('push')
  const answers = await Promise.all(Array.from({ length: 8 }, async () => await put(`${server.url}/${nar.url}`, nar.bytes, token)))
  for (const answer of answers) assert.ok(answer.status === 200 || answer.status === 201, `${answer.status} ${answer.body}`)
  assert.ok(answers.some(a => a.status === 201), 'at least one upload created the file')

  const files = await server.storedFiles()
  assert.equal(files.length, 1, `files: ${files.join(', ')}`)
  // store/nar/xx/<fileHash> in the folder, nar/<fileHash>.nar.zst in a bucket.
  assert.ok(files[0]?.endsWith(`/${nar.fileHash}`) === true || files[0] === `nar/${nar.fileHash}.nar.zst`, `the one file is named by its hash: ${files[0]}`)
  assert.equal((await rowCounts(server)).narFiles, 1)

  const served = await get(`${server.url}/${nar.url}`)
  assert.equal(served.status, 200)
  assert.ok(served.bytes.equals(nar.bytes), 'the stored file is byte-for-byte the upload')
})

test('8 concurrent PUTs of the same narinfo all succeed and leave one row', async (t) => {
  const key = generateKeyPair('test-uploader-1')
  const server = await startServer(t, { trustedKeys: [key.publicKeyText] })
  const nar = await freshNar('zstd')
  const token = await server.token('push')
  assert.equal((await put(`${server.url}/${nar.url}`, nar.bytes, token)).status, 201)
  const narinfo = makeNarinfo(nar, { keys: [key.secretKey] })
  const answers = await Promise.all(Array.from({ length: 8 }, async () =>
    await put(`${server.url}/${nar.hashPart}.narinfo`, narinfo, token)))
  const statuses = answers.map(a => a.status).sort()
  assert.deepEqual(statuses, [200, 200, 200, 200, 200, 200, 200, 201], answers.map(a => a.body).join(''))
  assert.equal((await rowCounts(server)).narinfos, 1)
  assert.equal((await get(`${server.url}/${nar.hashPart}.narinfo`)).body, narinfo)
})

test('two different narinfos for one path at the same moment: one 201, one 409, and the winner is served', async (t) => {
  const key = generateKeyPair('test-uploader-1')
  const server = await startServer(t, { trustedKeys: [key.publicKeyText] })
  const token = await server.token('push')
  const [nar, other] = await Promise.all([freshNar('xz'), freshNar('xz')])
  for (const n of [nar, other]) assert.equal((await put(`${server.url}/${n.url}`, n.bytes, token)).status, 201)
  const honest = makeNarinfo(nar, { keys: [key.secretKey] })
  // Validly signed, same StorePath, other content.
  const rival = makeNarinfo({ ...other, storePath: nar.storePath, baseName: nar.baseName, hashPart: nar.hashPart }, { keys: [key.secretKey] })
  const answers = await Promise.all([honest, rival].map(async text => await put(`${server.url}/${nar.hashPart}.narinfo`, text, token)))
  assert.deepEqual(answers.map(a => a.status).sort(), [201, 409], answers.map(a => a.body).join(''))
  const winner = answers[0]?.status === 201 ? honest : rival
  assert.equal((await get(`${server.url}/${nar.hashPart}.narinfo`)).body, winner)
  assert.equal((await rowCounts(server)).narinfos, 1)
})
