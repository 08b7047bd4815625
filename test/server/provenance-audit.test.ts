/**
 * Provenance and the audit log: every accepted narinfo records the token, the client's address and
 * the trusted keys whose signatures verified; every write and refusal is in `narwhal audit`; both
 * survive a restart; gc takes a path's provenance with it (and fsck still agrees); the log keeps
 * only its newest audit.maxEntries entries.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { fileURLToPath } from 'node:url'
import { checkCache } from '../../src/cache/fsck.js'
import { generateKeyPair } from '../../src/signing/keys.js'
import { backendFor } from '../helpers/backend.js'
import { runOk, tempDir } from '../helpers/nix.js'
import { startServer, type TestServer } from '../helpers/server.js'
import { freshNar, makeNarinfo, put, upload } from '../helpers/upload.js'

const uploader = generateKeyPair('test-uploader-1')
const second = generateKeyPair('test-uploader-2')
const stranger = generateKeyPair('someone-else-1')
const trustedKeys = [uploader.publicKeyText, second.publicKeyText]
const CLI = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url))

interface AuditJson { time: string, tokenId: number | null, tokenName: string | null, clientAddress: string | null, method: string, subject: string, outcome: string, status: number, code: string | null }

async function audit (dataDir: string, ...args: string[]): Promise<AuditJson[]> {
  return JSON.parse(await runOk('node', [CLI, 'audit', '--json', '--data', dataDir, ...(await backendFor(dataDir)).args, ...args])) as AuditJson[]
}

async function stop (server: TestServer): Promise<void> {
  await server.app.close()
  await server.cache.close()
}

test('an accepted narinfo records token, address and verifying keys; writes and refusals are audited; both survive a restart', async (t) => {
  const dataDir = tempDir('narwhal-data-')
  const first = await startServer(t, { dataDir, trustedKeys })
  const token = await first.token('push')
  const tokenRow = (await first.cache.metadata.tokens.list()).at(-1)
  assert.ok(tokenRow !== undefined)

  const nar = await freshNar('xz')
  // Signed by a trusted key and by a key this cache does not know: only the trusted one counts.
  const answers = await upload(first, nar, makeNarinfo(nar, { keys: [uploader.secretKey, stranger.secretKey] }), token)
  assert.equal(answers.narinfo.status, 201, answers.narinfo.body)
  // The same path again with a second trusted signature: merged, and recorded as such.
  const merged = await put(`${first.url}/${nar.hashPart}.narinfo`, makeNarinfo(nar, { keys: [second.secretKey] }), token)
  assert.equal(merged.status, 200, merged.body)
  // Refusals: a narinfo signed by no trusted key, and an upload without a token.
  const other = await freshNar('zstd')
  assert.equal((await put(`${first.url}/${other.url}`, other.bytes, token)).status, 201)
  const unsigned = await put(`${first.url}/${other.hashPart}.narinfo`, makeNarinfo(other, { keys: [stranger.secretKey] }), token)
  assert.equal(unsigned.status, 403)
  assert.equal((await put(`${first.url}/${other.hashPart}.narinfo`, makeNarinfo(other, { keys: [uploader.secretKey] }))).status, 401)
  await stop(first)

  const server = await startServer(t, { dataDir, trustedKeys })
  const details = (await server.cache.browse.path(nar.hashPart, server.cache.trustedKeys))
  assert.ok(details !== undefined)
  assert.deepEqual(details.provenance.map(p => ({ ...p, acceptedAt: 0 })), [
    { acceptedAt: 0, outcome: 'created', tokenId: tokenRow.id, tokenName: tokenRow.name, keyNames: ['test-uploader-1'], clientAddress: '127.0.0.1', upstream: null },
    { acceptedAt: 0, outcome: 'merged', tokenId: tokenRow.id, tokenName: tokenRow.name, keyNames: ['test-uploader-2'], clientAddress: '127.0.0.1', upstream: null }
  ])
  assert.equal((await server.cache.browse.path(other.hashPart, server.cache.trustedKeys)), undefined)

  const all = await audit(dataDir)
  assert.deepEqual(all.map(e => [e.method, e.outcome, e.status, e.code, e.tokenId]), [
    ['PUT', 'created', 201, null, tokenRow.id],
    ['PUT', 'created', 201, null, tokenRow.id],
    ['PUT', 'merged', 200, null, tokenRow.id],
    ['PUT', 'created', 201, null, tokenRow.id],
    ['PUT', 'refused', 403, 'NARWHAL_SIGNATURE_REJECTED', tokenRow.id],
    ['PUT', 'refused', 401, 'NARWHAL_UNAUTHORIZED', null]
  ])
  assert.equal(all[1]?.subject, nar.storePath)
  assert.ok(all.every(e => e.clientAddress === '127.0.0.1'))
  // --path: the path's narinfo writes and its NAR's upload, nothing of the other path.
  assert.deepEqual((await audit(dataDir, '--path', nar.storePath)).map(e => e.subject), [nar.url, nar.storePath, nar.storePath])
  assert.equal((await audit(dataDir, '--path', other.hashPart)).length, 2)
  assert.equal((await audit(dataDir, '--token', String(tokenRow.id))).length, 5)
  assert.equal((await audit(dataDir, '--since', '1h')).length, 6)
  // Text output: one line per entry, the refusal's code in it.
  const lines = (await runOk('node', [CLI, 'audit', '--data', dataDir, ...(await backendFor(dataDir)).args])).trim().split('\n')
  assert.equal(lines.length, 6)
  assert.match(lines[4] ?? '', /\trefused\t403\tNARWHAL_SIGNATURE_REJECTED\t/)
})

test('gc removes a path with its provenance, a re-upload starts afresh, and fsck finds nothing amiss', async (t) => {
  const dataDir = tempDir('narwhal-data-')
  const server = await startServer(t, { dataDir, trustedKeys })
  const token = await server.token('push')
  const dep = await freshNar('xz')
  const top = await freshNar('xz')
  assert.equal((await upload(server, dep, makeNarinfo(dep, { keys: [uploader.secretKey] }), token)).narinfo.status, 201)
  assert.equal((await upload(server, top, makeNarinfo(top, { keys: [uploader.secretKey], references: [dep.baseName] }), token)).narinfo.status, 201)

  await runOk('node', [CLI, 'gc', '--max-size', '0', '--keep-recent', '0', '--data', dataDir, ...(await backendFor(dataDir)).args])
  assert.equal((await server.cache.browse.path(dep.hashPart, server.cache.trustedKeys)), undefined)
  const report = await checkCache({ metadata: server.cache.metadata, blobs: server.cache.blobs }, { verifyContent: false, graceMs: 0 })
  assert.deepEqual(report.problems, [])

  const again = await upload(server, dep, makeNarinfo(dep, { keys: [second.secretKey] }), token)
  assert.equal(again.narinfo.status, 201, again.narinfo.body)
  // No provenance row outlived its path: each re-uploaded path shows only its new write.
  assert.deepEqual((await server.cache.browse.path(dep.hashPart, server.cache.trustedKeys))?.provenance.map(p => [p.outcome, p.keyNames]), [['created', ['test-uploader-2']]])
  const topAgain = await upload(server, top, makeNarinfo(top, { keys: [second.secretKey], references: [dep.baseName] }), token)
  assert.equal(topAgain.narinfo.status, 201, topAgain.narinfo.body)
  assert.deepEqual((await server.cache.browse.path(top.hashPart, server.cache.trustedKeys))?.provenance.map(p => [p.outcome, p.keyNames]), [['created', ['test-uploader-2']]])
})

test('the audit log keeps only its newest audit.maxEntries entries', async (t) => {
  const dataDir = tempDir('narwhal-data-')
  const server = await startServer(t, { dataDir, trustedKeys, env: { NARWHAL_AUDIT_MAX_ENTRIES: '5' } })
  const hashes = Array.from({ length: 8 }, (_, i) => String(i).repeat(32))
  for (const hash of hashes) assert.equal((await put(`${server.url}/${hash}.narinfo`, 'x')).status, 401)
  await server.cache.audit.flush()
  const kept = await audit(dataDir, '--limit', '0')
  assert.deepEqual(kept.map(e => e.subject), hashes.slice(3).map(h => `${h}.narinfo`))
})

test('an upload batch is audited part by part, and its narinfos get provenance like a PUT', async (t) => {
  const dataDir = tempDir('narwhal-data-')
  const server = await startServer(t, { dataDir, trustedKeys })
  const token = await server.token('push')
  const nar = await freshNar('xz')
  const form = new FormData()
  form.append(nar.url, new Blob([nar.bytes]), 'nar')
  form.append(`${nar.hashPart}.narinfo`, new Blob([makeNarinfo(nar, { keys: [uploader.secretKey] })]), 'narinfo')
  form.append('not-a-part', new Blob(['x']), 'x')
  const response = await fetch(`${server.url}/api/v1/upload-batch`, { method: 'POST', headers: { authorization: `Bearer ${token}` }, body: form })
  assert.equal(response.status, 200)
  const refused = await fetch(`${server.url}/api/v1/upload-batch`, { method: 'POST', body: new FormData() })
  assert.equal(refused.status, 401)
  // The missing-paths query only reads: not audited.
  await fetch(`${server.url}/api/v1/missing-paths`, { method: 'POST', headers: { authorization: `Bearer ${token}` }, body: JSON.stringify({ hashParts: [nar.hashPart] }) })
  await server.cache.audit.flush()

  assert.deepEqual((await audit(dataDir)).map(e => [e.method, e.subject, e.outcome, e.status, e.code]), [
    ['BATCH', nar.url, 'created', 201, null],
    ['BATCH', `${nar.hashPart}.narinfo`, 'created', 201, null],
    ['BATCH', 'not-a-part', 'refused', 400, 'NARWHAL_BAD_NAME'],
    ['POST', 'api/v1/upload-batch', 'refused', 401, 'NARWHAL_UNAUTHORIZED']
  ])
  assert.deepEqual((await server.cache.browse.path(nar.hashPart, server.cache.trustedKeys))?.provenance.map(p => [p.outcome, p.tokenName, p.keyNames, p.clientAddress]),
    [['created', 'test-push', ['test-uploader-1'], '127.0.0.1']])
})
