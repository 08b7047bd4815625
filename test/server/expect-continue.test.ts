/**
 * Rule (fact sheet §13.9): libcurl sends `Expect: 100-continue` on PUTs over 1 MiB and waits for
 * the interim answer before sending the body. The server answers `100 Continue`, reads the body
 * and gives a final status; a refusal (auth, size limit) is a final status sent instead of
 * `100 Continue`, so the client never sends a body that is about to be refused.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import http from 'node:http'
import { mkdtempSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { sqliteOnly } from '../helpers/backend.js'
import { startServer, type TestServer } from '../helpers/server.js'
import { collect, freshNar, rowCounts, type Nar } from '../helpers/upload.js'

interface ContinueResult { continued: boolean, status: number, body: string, bodySent: boolean }

/** A PUT as curl does it: headers with Expect, the body only after `100 Continue`. */
function putWithExpect (server: TestServer, nar: Nar, headers: Record<string, string | number>): Promise<ContinueResult> {
  return new Promise((resolve, reject) => {
    let continued = false
    let bodySent = false
    const req = http.request({
      host: '127.0.0.1',
      port: server.port,
      method: 'PUT',
      path: `/${nar.url}`,
      agent: false,
      headers: { expect: '100-continue', 'content-length': nar.bytes.length, 'content-type': 'application/x-nix-nar', ...headers }
    }, res => {
      collect(res).then(bytes => resolve({ continued, status: res.statusCode ?? 0, body: bytes.toString('utf8'), bodySent }), reject)
    })
    req.on('continue', () => {
      continued = true
      bodySent = true
      req.end(nar.bytes)
    })
    req.on('error', reject)
    req.setTimeout(15_000, () => req.destroy(new Error('no answer to a PUT with Expect: 100-continue')))
  })
}

test('PUT with Expect: 100-continue: 100 Continue, then the body, then 201', async (t) => {
  const server = await startServer(t)
  // Over 1 MiB, the size at which curl starts sending Expect.
  const nar = await freshNar('zstd', { randomBytes: 1536 * 1024 })
  assert.ok(nar.bytes.length > 1024 * 1024)
  const result = await putWithExpect(server, nar, { authorization: `Bearer ${(await server.token('push'))}` })
  assert.equal(result.continued, true, 'the client got 100 Continue')
  assert.equal(result.status, 201, result.body)
  assert.equal(result.body, 'created\n')
  assert.equal((await server.cache.metadata.narFiles.get(nar.fileHash))?.fileSize, nar.bytes.length)
})

test('PUT with Expect: 100-continue of a NAR already stored: 100, then 200', async (t) => {
  const server = await startServer(t)
  const nar = await freshNar('zstd')
  const token = await server.token('push')
  assert.equal((await putWithExpect(server, nar, { authorization: `Bearer ${token}` })).status, 201)
  const again = await putWithExpect(server, nar, { authorization: `Bearer ${token}` })
  assert.equal(again.continued, true)
  assert.equal(again.status, 200)
  assert.equal(again.body, 'unchanged\n')
})

test('PUT with Expect: 100-continue refused (no token, too large): a final status without 100 Continue, nothing stored', async (t) => {
  const server = await startServer(t)
  const nar = await freshNar('xz')
  const unauthorised = await putWithExpect(server, nar, {})
  assert.equal(unauthorised.status, 401)
  assert.equal(unauthorised.continued, false, 'a refused upload is not invited to send its body')
  assert.equal(unauthorised.bodySent, false)
  assert.match(unauthorised.body, /^NARWHAL_UNAUTHORIZED: /)

  const tooLarge = await putWithExpect(server, nar, {
    authorization: `Bearer ${(await server.token('push'))}`,
    'content-length': 100 * 1024 ** 4
  })
  assert.equal(tooLarge.status, 413)
  assert.equal(tooLarge.continued, false, 'an upload over the limit is not invited to send its body')
  assert.match(tooLarge.body, /^NARWHAL_TOO_LARGE: NAR file of 109951162777600 bytes is larger than the limit of 68719476736 bytes \(limits\.narBytes\)/)
  assert.deepEqual(await server.storedFiles(), [])
  assert.deepEqual(await rowCounts(server), { narFiles: 0, narinfos: 0, refs: 0, auxFiles: 0 })
})

test('PUT with Expect: 100-continue short of the free-space reserve: 507 instead of 100 Continue', sqliteOnly('the free-space reserve is of the data folder\'s disk'), async (t) => {
  const file = path.join(mkdtempSync(path.join(os.tmpdir(), 'narwhal-reserve-')), 'narwhal.json')
  // No disk here has 8 PiB free.
  writeFileSync(file, JSON.stringify({ limits: { freeSpaceReserveBytes: Number.MAX_SAFE_INTEGER } }))
  const server = await startServer(t, { env: { NARWHAL_CONFIG: file } })
  const nar = await freshNar('zstd')
  const result = await putWithExpect(server, nar, { authorization: `Bearer ${(await server.token('push'))}` })
  assert.equal(result.status, 507, result.body)
  assert.equal(result.continued, false, 'a client short of room is not invited to send its body, so it can retry it whole')
  assert.deepEqual(await server.storedFiles(), [])
})
