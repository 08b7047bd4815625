/**
 * The server side of the pusher's API: the batched missing-paths query and the multipart upload,
 * whose parts must be verified exactly like the single PUTs.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { MISSING_PATHS_ROUTE, UPLOAD_BATCH_ROUTE, type UploadBatchResponse } from '../../src/api/v1.js'
import { closureInfo, hashPartOf, topologicalOrder } from '../../src/pusher/closure.js'
import { dumpCompressed } from '../../src/pusher/nar-file.js'
import { buildNarinfo, loadSecretKeys } from '../../src/pusher/signer.js'
import { buildClosure, nixKeyPair, tempDir } from '../helpers/nix.js'
import { startServer } from '../helpers/server.js'

test('missing-paths answers in one round trip, needs a push token, and checks its input', async (t) => {
  const key = await nixKeyPair('batch-1')
  const server = await startServer(t, { trustedKeys: [key.publicKey] })
  const token = await server.token('push')
  const ask = (body: unknown, auth = `Bearer ${token}`): Promise<Response> => fetch(server.url + MISSING_PATHS_ROUTE, {
    method: 'POST', headers: { authorization: auth, 'content-type': 'application/json' }, body: JSON.stringify(body)
  })
  const hashes = ['m6w0ra3ns1bjzrazws3m2m2gn9z4rlng', '00kjynz8n03652qccs76ivsvark3pr3d']
  const ok = await ask({ hashParts: hashes })
  assert.equal(ok.status, 200)
  assert.deepEqual(await ok.json(), { missing: hashes })
  assert.equal((await ask({ hashParts: hashes }, '')).status, 401)
  assert.equal((await ask({ hashParts: hashes }, `Bearer ${(await server.token('read'))}`)).status, 403)
  const bad = await ask({ hashParts: ['../etc/passwd'] })
  assert.equal(bad.status, 400)
  assert.match(await bad.text(), /^NARWHAL_BAD_REQUEST: missing-paths query/)
})

test('upload-batch verifies each part like its PUT: good parts stored, bad parts refused with the PUT\'s code', async (t) => {
  const key = await nixKeyPair('batch-1')
  const server = await startServer(t, { trustedKeys: [key.publicKey] })
  const token = await server.token('push')
  const closure = await buildClosure()
  const infos = topologicalOrder(await closureInfo([closure.top]))
  const keys = loadSecretKeys([key.secretFile])
  const tmp = tempDir()
  const form = new FormData()
  const nars = []
  for (const info of infos) {
    const nar = await dumpCompressed(info.path, tmp, 'zstd')
    nars.push(nar)
    form.append(nar.url, new Blob([readFileSync(nar.file!)]), 'nar')
  }
  // A NAR whose bytes do not hash to its name, and a narinfo whose NAR never came.
  const wrongName = `nar/${'0'.repeat(52)}.nar.zst`
  form.append(wrongName, new Blob([readFileSync(nars[0]!.file!)]), 'nar')
  const orphan = { ...nars[0]!, url: `nar/${'1'.repeat(52)}.nar.zst`, fileHash: '1'.repeat(52) }
  form.append(`${hashPartOf(infos[0]!.path)}.narinfo`, new Blob([buildNarinfo(infos[0]!, orphan, keys)]), 'narinfo')
  for (const [i, info] of infos.entries()) {
    form.append(`${hashPartOf(info.path)}.narinfo`, new Blob([buildNarinfo(info, nars[i]!, keys)]), 'narinfo')
  }
  form.append('../../etc/passwd', new Blob(['x']), 'x')
  const response = await fetch(server.url + UPLOAD_BATCH_ROUTE, { method: 'POST', headers: { authorization: `Bearer ${token}` }, body: form })
  assert.equal(response.status, 200)
  const { results } = await response.json() as UploadBatchResponse
  assert.deepEqual(results.map(r => r.status), [201, 201, 201, 400, 422, 201, 201, 201, 400])
  assert.equal(results[3]?.code, 'NARWHAL_NAR_INVALID')
  assert.equal(results[4]?.code, 'NARWHAL_MISSING_DEPENDENCY')
  assert.equal(results[8]?.code, 'NARWHAL_BAD_NAME')
  assert.equal((await server.cache.metadata.narinfos.count()), 3)
  // The wrong-name NAR left nothing behind.
  assert.equal((await server.storedFiles()).length, 3)

  const unauthorised = await fetch(server.url + UPLOAD_BATCH_ROUTE, { method: 'POST', body: new FormData() })
  assert.equal(unauthorised.status, 401)
  const notMultipart = await fetch(server.url + UPLOAD_BATCH_ROUTE, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: '{}' })
  assert.equal(notMultipart.status, 400)
})

test('upload-batch answers a malformed multipart body with 400, never 500, and stores nothing', async (t) => {
  // Found by test/fuzz/routes.test.ts: busboy's parse errors used to escape as 500s.
  const server = await startServer(t)
  const token = await server.token('push')
  const nar = Buffer.from('not even a NAR, and cut short')
  const fileHash = 'a'.repeat(52)
  const part = `--x\r\nContent-Disposition: form-data; name="nar/${fileHash}.nar"; filename="part"\r\n` +
    'Content-Type: application/octet-stream\r\n\r\n'
  const bodies: Array<[string, string | Buffer]> = [
    ['closing delimiter with an extra dash', '---x--\r\n'],
    ['no delimiter at all', 'garbage'],
    ['a field part cut short', '--x\r\nContent-Disposition: form-data; name="x"\r\n\r\nabc'],
    ['a file part cut short', Buffer.concat([Buffer.from(part), nar])]
  ]
  for (const [why, body] of bodies) {
    const answer = await fetch(server.url + UPLOAD_BATCH_ROUTE, {
      method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'multipart/form-data; boundary=x' }, body
    })
    assert.equal(answer.status, 400, why)
    assert.match(await answer.text(), /^NARWHAL_BAD_REQUEST: upload-batch: the multipart body is malformed/, why)
  }
  assert.deepEqual(await server.storedFiles(), [])
  assert.equal((await server.cache.metadata.narinfos.count()), 0)
})

test('upload-batch refuses a part without a name as NARWHAL_BAD_NAME, and goes on with the next part', async (t) => {
  // Found by test/fuzz/routes.test.ts: a part whose Content-Disposition has no name parameter
  // (here a NUL before it) has an undefined field name, which used to crash the route with a 500.
  const server = await startServer(t)
  const body = '--x\r\nContent-Disposition: form-data;\0 name="nar/x.nar"; filename="part"\r\n\r\nabc\r\n' +
    '--x\r\nContent-Disposition: form-data; filename="part"\r\n\r\nabc\r\n' +
    '--x\r\nContent-Disposition: form-data; name="x"\r\n\r\nabc\r\n--x--\r\n'
  const answer = await fetch(server.url + UPLOAD_BATCH_ROUTE, {
    method: 'POST', headers: { authorization: `Bearer ${(await server.token('push'))}`, 'content-type': 'multipart/form-data; boundary=x' }, body
  })
  assert.equal(answer.status, 200)
  const { results } = await answer.json() as UploadBatchResponse
  assert.deepEqual(results.map(r => [r.name, r.status, r.code]), [
    ['', 400, 'NARWHAL_BAD_NAME'], ['', 400, 'NARWHAL_BAD_NAME'], ['x', 400, 'NARWHAL_BAD_NAME']
  ])
  assert.deepEqual(await server.storedFiles(), [])
})

test('upload-batch answers a batch with a large part that is not form-data (skipped by the parser)', async (t) => {
  // Found by test/fuzz/routes.test.ts: busboy skips a part whose Content-Disposition is not
  // form-data, and a skipped part of more than its 16 KiB buffer that ends in the same chunk as
  // the closing delimiter left the parser paused for ever: the request never got an answer.
  const server = await startServer(t)
  const token = await server.token('push')
  for (const size of [20_000, 1_000_000]) {
    const body = Buffer.concat([
      Buffer.from('--x\r\nContent-Disposition: inline; name="a"; filename="part"\r\n\r\n'),
      Buffer.alloc(size, 0x61),
      Buffer.from('\r\n--x\r\nContent-Disposition: form-data; name="x"\r\n\r\nabc\r\n--x--\r\n')
    ])
    const answer = await fetch(server.url + UPLOAD_BATCH_ROUTE, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'multipart/form-data; boundary=x' },
      body,
      signal: AbortSignal.timeout(20_000)
    })
    assert.equal(answer.status, 200, `${size} bytes`)
    const { results } = await answer.json() as UploadBatchResponse
    assert.deepEqual(results.map(r => [r.name, r.code]), [['x', 'NARWHAL_BAD_NAME']], `${size} bytes`)
  }
  assert.deepEqual(await server.storedFiles(), [])
})
