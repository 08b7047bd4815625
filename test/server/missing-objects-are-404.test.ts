/**
 * Rule (fact sheet §7.3, §13.1-2): "missing" is 404 for GET and HEAD alike, never 200, 204, 400
 * or 500, and a HEAD answer carries no body (curl would read it as the next response). A NAR
 * recorded in the database but gone from disk is also a plain 404, not a 500 or a truncated 200,
 * and so is one a collection is removing (its row 'deleting'), from the moment it is marked.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { startServer, type TestServer } from '../helpers/server.js'
import { generateKeyPair } from '../../src/signing/keys.js'
import { fileHashOf, freshNar, get, makeNarinfo, parseRaw, put, rawHttp, request, ruleOf } from '../helpers/upload.js'
import { replaceNar } from '../helpers/blobs.js'

const HASH = '0123456789abcdfghijklmnpqrsvwxyz'
const FILE_HASH = fileHashOf(Buffer.from('not uploaded'))
const DRV = `${HASH}-hello-2.10.drv`

const MISSING = [
  `/${HASH}.narinfo`,
  `/nar/${FILE_HASH}.nar.xz`,
  `/nar/${FILE_HASH}.nar`,
  `/nar/${FILE_HASH}.nar.zst`,
  `/log/${DRV}`,
  `/${HASH}.ls`,
  `/realisations/sha256:${'ab'.repeat(32)}!out.doi`,
  `/build-trace-v2/${DRV}/out.doi`,
  `/debuginfo/${'0123456789'.repeat(4)}`
]

async function head (server: TestServer, urlPath: string): Promise<{ status: number, head: string, rest: Buffer }> {
  return parseRaw(await rawHttp(server.port, `HEAD ${urlPath} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`))
}

test('GET of a missing object: 404 NARWHAL_NOT_FOUND, on every route', async (t) => {
  const server = await startServer(t)
  for (const urlPath of MISSING) {
    const answer = await request(server, 'GET', urlPath)
    assert.equal(answer.status, 404, `${urlPath}: ${answer.body}`)
    assert.equal(ruleOf(answer), 'NARWHAL_NOT_FOUND', urlPath)
    assert.match(answer.headers['content-type'] ?? '', /^text\/plain/)
  }
})

test('HEAD of a missing object: 404 and not one byte of body', async (t) => {
  const server = await startServer(t)
  for (const urlPath of MISSING) {
    const answer = await head(server, urlPath)
    assert.equal(answer.status, 404, `${urlPath}: ${answer.head}`)
    assert.equal(answer.rest.length, 0, `${urlPath}: HEAD answer carried a body: ${answer.rest.toString('latin1')}`)
  }
})

test('an unknown URL is 404 too, with a body naming it', async (t) => {
  const server = await startServer(t)
  const answer = await get(`${server.url}/no/such/thing`)
  assert.equal(answer.status, 404)
  assert.equal(answer.body, 'NARWHAL_NOT_FOUND: nothing is served at GET /no/such/thing\n')
})

test('a NAR recorded in the database but removed from its storage: 404 for GET and HEAD, not 500', async (t) => {
  const server = await startServer(t)
  const nar = await freshNar('xz')
  assert.equal((await put(`${server.url}/${nar.url}`, nar.bytes, (await server.token('push')))).status, 201)
  assert.equal((await get(`${server.url}/${nar.url}`)).status, 200)
  // Lost behind the server's back: a hand-deleted file, an object removed from the bucket.
  await server.cache.blobs.delete({ fileHash: nar.fileHash, compression: 'xz' })
  const answer = await get(`${server.url}/${nar.url}`)
  assert.equal(answer.status, 404, answer.body)
  assert.equal(ruleOf(answer), 'NARWHAL_NOT_FOUND')
  const headAnswer = await head(server, `/${nar.url}`)
  assert.equal(headAnswer.status, 404)
  assert.equal(headAnswer.rest.length, 0)
})

test('a NAR whose stored object has the wrong size: 404, never a short 200', async (t) => {
  const server = await startServer(t)
  const nar = await freshNar('xz')
  assert.equal((await put(`${server.url}/${nar.url}`, nar.bytes, (await server.token('push')))).status, 201)
  await replaceNar(server.cache.blobs, { fileHash: nar.fileHash, compression: 'xz' }, nar.bytes.subarray(0, 10))
  const answer = await get(`${server.url}/${nar.url}`)
  assert.equal(answer.status, 404, answer.body)
  assert.equal(ruleOf(answer), 'NARWHAL_NOT_FOUND')
})

test('a NAR a collection is removing is 404 at once, file still on disk, small or large; its narinfo upload is refused', async (t) => {
  const uploader = generateKeyPair('test-uploader-1')
  const server = await startServer(t, { trustedKeys: [uploader.publicKeyText] })
  const token = await server.token('push')
  // One small enough for the fast path's memory (read once first, so it is kept), one not.
  const small = await freshNar('none')
  const large = await freshNar('none', { randomBytes: 128 * 1024 })
  for (const nar of [small, large]) {
    assert.equal((await put(`${server.url}/${nar.url}`, nar.bytes, token)).status, 201)
    assert.equal((await get(`${server.url}/${nar.url}`)).status, 200)
  }
  // gc's first step: unnamed NARs marked 'deleting'; their files are deleted next.
  const marked = await server.cache.metadata.narFiles.markUnnamedDeleting(Date.now() + 1, 0)
  assert.deepEqual(marked.map(f => f.fileHash).sort(), [small.fileHash, large.fileHash].sort())
  for (const nar of [small, large]) {
    assert.equal((await get(`${server.url}/${nar.url}`)).status, 404, `${nar.url} is not served while it is being deleted`)
    assert.equal((await head(server, `/${nar.url}`)).status, 404)
    const narinfo = await put(`${server.url}/${nar.hashPart}.narinfo`, makeNarinfo(nar, { keys: [uploader.secretKey] }), token)
    assert.equal(ruleOf(narinfo), 'NARWHAL_MISSING_DEPENDENCY', narinfo.body)
  }
})
