/**
 * Rule: a narinfo is stored only when it parses strictly, names the path its URL names, describes
 * a NAR this cache verified (compression, sizes and hashes measured, not believed), carries a
 * valid signature by a trusted uploader key, and its references are already here. A refused
 * narinfo writes no row; a conflicting one leaves the first in place; identical re-uploads succeed
 * and extra signatures are merged.
 */
import { test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { generateKeyPair } from '../../src/signing/keys.js'
import { formatNarInfo } from '../../src/nix/narinfo.js'
import { startServer, type TestServer } from '../helpers/server.js'
import { freshNar, get, makeNarinfo, narinfoFor, parseRaw, put, rawHttp, rowCounts, ruleOf, runBytes, type Answer, type Nar } from '../helpers/upload.js'

const uploader = generateKeyPair('test-uploader-1')
const second = generateKeyPair('test-uploader-2')
const stranger = generateKeyPair('someone-else-1')

interface Setup { server: TestServer, token: string }

async function setup (t: TestContext): Promise<Setup> {
  const server = await startServer(t, { trustedKeys: [uploader.publicKeyText, second.publicKeyText] })
  return { server, token: (await server.token('push')) }
}

async function putNar (s: Setup, nar: Nar): Promise<void> {
  const answer = await put(`${s.server.url}/${nar.url}`, nar.bytes, s.token)
  assert.equal(answer.status, 201, answer.body)
}

async function putNarinfo (s: Setup, hashPart: string, text: string | Buffer): Promise<Answer> {
  return await put(`${s.server.url}/${hashPart}.narinfo`, text, s.token, { 'content-type': 'text/x-nix-narinfo' })
}

/** Asserts a refusal and that the path is still not served and no narinfo row was added. */
async function assertRefused (s: Setup, answer: Answer, status: number, rule: string, message: RegExp, hashPart: string,
  narinfosBefore: number): Promise<void> {
  assert.equal(answer.status, status, answer.body)
  assert.equal(ruleOf(answer), rule)
  assert.match(answer.body, message)
  assert.ok(answer.body.endsWith('\n'))
  assert.equal((await rowCounts(s.server)).narinfos, narinfosBefore, 'a refused narinfo writes no row')
  assert.equal((await s.server.cache.metadata.narinfos.get(hashPart)), undefined)
  assert.equal((await get(`${s.server.url}/${hashPart}.narinfo`)).status, 404)
}

test('a valid, signed narinfo after its NAR: 201, served back exactly', async (t) => {
  const s = await setup(t)
  const nar = await freshNar('xz')
  await putNar(s, nar)
  const narinfo = makeNarinfo(nar, { keys: [uploader.secretKey] })
  const answer = await putNarinfo(s, nar.hashPart, narinfo)
  assert.equal(answer.status, 201, answer.body)
  const served = await get(`${s.server.url}/${nar.hashPart}.narinfo`)
  assert.equal(served.status, 200)
  assert.equal(served.headers['content-type'], 'text/x-nix-narinfo')
  assert.equal(served.body, narinfo)
  // HEAD, as Nix probes before uploading: same status, the length of the text, no body.
  const head = parseRaw(await rawHttp(s.server.port, `HEAD /${nar.hashPart}.narinfo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`))
  assert.equal(head.status, 200)
  assert.match(head.head, new RegExp(`\r\ncontent-length: ${Buffer.byteLength(narinfo)}\r\n`, 'i'))
  assert.equal(head.rest.length, 0)
})

test('tampered narinfo (References or NarSize changed, Sig kept): 403 NARWHAL_SIGNATURE_REJECTED', async (t) => {
  const s = await setup(t)
  const dep = await freshNar('xz')
  await putNar(s, dep)
  assert.equal((await putNarinfo(s, dep.hashPart, makeNarinfo(dep, { keys: [uploader.secretKey] }))).status, 201)
  const nar = await freshNar('xz')
  await putNar(s, nar)
  const signed = narinfoFor(nar, { keys: [uploader.secretKey] })
  const before = (await rowCounts(s.server)).narinfos

  // An added reference that is present in the cache, so only the signature can catch it.
  const withReference = formatNarInfo({ ...signed, references: [dep.baseName] })
  await assertRefused(s, await putNarinfo(s, nar.hashPart, withReference), 403, 'NARWHAL_SIGNATURE_REJECTED',
    /the signature by test-uploader-1 does not verify over this narinfo/, nar.hashPart, before)

  const withNarSize = formatNarInfo({ ...signed, narSize: signed.narSize + 8n })
  await assertRefused(s, await putNarinfo(s, nar.hashPart, withNarSize), 403, 'NARWHAL_SIGNATURE_REJECTED',
    /does not verify/, nar.hashPart, before)

  // The same by text edit, as an attacker would do it.
  const text = makeNarinfo(nar, { keys: [uploader.secretKey] })
  const edited = text.replace(/^NarSize: (\d+)$/m, (_m, n: string) => `NarSize: ${Number(n) + 1}`)
  assert.notEqual(edited, text)
  await assertRefused(s, await putNarinfo(s, nar.hashPart, edited), 403, 'NARWHAL_SIGNATURE_REJECTED', /does not verify/,
    nar.hashPart, before)

  // A valid signature does not excuse a forged one under another trusted name.
  const forgedToo = formatNarInfo({ ...signed, sigs: [...signed.sigs, second.secretKey.sign('something else')] })
  await assertRefused(s, await putNarinfo(s, nar.hashPart, forgedToo), 403, 'NARWHAL_SIGNATURE_REJECTED',
    /signature by test-uploader-2 does not verify/, nar.hashPart, before)
})

test('unsigned, or signed only by an untrusted key: 403 NARWHAL_SIGNATURE_REJECTED', async (t) => {
  const s = await setup(t)
  const nar = await freshNar('zstd')
  await putNar(s, nar)
  for (const keys of [[], [stranger.secretKey]]) {
    await assertRefused(s, await putNarinfo(s, nar.hashPart, makeNarinfo(nar, { keys })), 403, 'NARWHAL_SIGNATURE_REJECTED',
      /no signature by a trusted uploader key \(this cache trusts: test-uploader-1, test-uploader-2\)/, nar.hashPart, 0)
  }
})

test('a server that trusts no key refuses every narinfo: 403 NARWHAL_NO_TRUSTED_KEY', async (t) => {
  const server = await startServer(t)
  const s = { server, token: (await server.token('push')) }
  const nar = await freshNar('xz')
  await putNar(s, nar)
  await assertRefused(s, await putNarinfo(s, nar.hashPart, makeNarinfo(nar, { keys: [uploader.secretKey] })), 403,
    'NARWHAL_NO_TRUSTED_KEY', /trusts no uploader key/, nar.hashPart, 0)
})

test('a validly signed narinfo whose URL points at another path\'s NAR: 400 NarHash mismatch', async (t) => {
  const s = await setup(t)
  const mine = await freshNar('xz')
  const other = await freshNar('xz')
  await putNar(s, mine)
  await putNar(s, other)
  // URL, Compression, FileHash and FileSize are outside the signature: the Sig stays valid.
  const info = narinfoFor(mine, { keys: [uploader.secretKey] })
  const text = formatNarInfo({ ...info, url: other.url, fileHash: narinfoFor(other).fileHash, fileSize: BigInt(other.bytes.length) })
  await assertRefused(s, await putNarinfo(s, mine.hashPart, text), 400, 'NARWHAL_NARINFO_INVALID',
    new RegExp(`narinfo field NarHash: sha256:[0-9a-z]{52} but ${other.url.replaceAll('.', '\\.')} decompresses to a NAR`),
    mine.hashPart, 0)
})

test('a narinfo before its NAR: 422 NARWHAL_MISSING_DEPENDENCY', async (t) => {
  const s = await setup(t)
  const nar = await freshNar('xz')
  const narinfo = makeNarinfo(nar, { keys: [uploader.secretKey] })
  await assertRefused(s, await putNarinfo(s, nar.hashPart, narinfo), 422, 'NARWHAL_MISSING_DEPENDENCY',
    /has not been uploaded to this cache; upload the NAR before its narinfo/, nar.hashPart, 0)
  // Once the NAR is there, the same narinfo is accepted.
  await putNar(s, nar)
  assert.equal((await putNarinfo(s, nar.hashPart, narinfo)).status, 201)
})

test('a reference that is not in the cache: 422 NARWHAL_MISSING_DEPENDENCY, accepted once it is', async (t) => {
  const s = await setup(t)
  const dep = await freshNar('xz')
  const top = await freshNar('xz')
  await putNar(s, top)
  const topInfo = makeNarinfo(top, { keys: [uploader.secretKey], references: [dep.baseName, top.baseName] })
  await assertRefused(s, await putNarinfo(s, top.hashPart, topInfo), 422, 'NARWHAL_MISSING_DEPENDENCY',
    new RegExp(`References: ${dep.baseName} is not in this cache`), top.hashPart, 0)

  // The dependency's NAR alone is not enough: its narinfo is what makes it present.
  await putNar(s, dep)
  await assertRefused(s, await putNarinfo(s, top.hashPart, topInfo), 422, 'NARWHAL_MISSING_DEPENDENCY',
    /is not in this cache/, top.hashPart, 0)

  assert.equal((await putNarinfo(s, dep.hashPart, makeNarinfo(dep, { keys: [uploader.secretKey] }))).status, 201)
  const answer = await putNarinfo(s, top.hashPart, topInfo)
  assert.equal(answer.status, 201, answer.body)
  assert.deepEqual((await s.server.cache.metadata.narinfos.get(top.hashPart))?.references, [dep.baseName, top.baseName].sort())
})

test('a Compression field that lies about the NAR file: 400 naming Compression', async (t) => {
  const s = await setup(t)
  const nar = await freshNar('xz')
  await putNar(s, nar)
  const info = narinfoFor(nar, { keys: [uploader.secretKey] })
  const lies: Array<[string, string]> = [
    ['zstd', nar.url.replace(/\.xz$/, '.zst')],
    ['none', nar.url.replace(/\.xz$/, '')],
    ['zstd', nar.url]
  ]
  for (const [compression, url] of lies) {
    await assertRefused(s, await putNarinfo(s, nar.hashPart, formatNarInfo({ ...info, compression, url })), 400,
      'NARWHAL_NARINFO_INVALID', new RegExp(`narinfo field Compression: says ${compression} but the NAR file is xz`), nar.hashPart, 0)
  }
  // No Compression line at all means bzip2 to Nix, which is also a lie here.
  const noField = makeNarinfo(nar, { keys: [uploader.secretKey] }).replace('Compression: xz\n', '')
  await assertRefused(s, await putNarinfo(s, nar.hashPart, noField), 400, 'NARWHAL_NARINFO_INVALID',
    /Compression: says bzip2 but the NAR file is xz/, nar.hashPart, 0)
  // The right Compression with the wrong extension.
  const wrongExtension = formatNarInfo({ ...info, url: nar.url.replace(/\.xz$/, '.zst') })
  await assertRefused(s, await putNarinfo(s, nar.hashPart, wrongExtension), 400, 'NARWHAL_NARINFO_INVALID',
    /field URL: extension "\.zst" does not match Compression xz/, nar.hashPart, 0)
})

test('FileHash, FileSize or a URL outside nar/ that do not match: 400', async (t) => {
  const s = await setup(t)
  const nar = await freshNar('xz')
  const other = await freshNar('xz')
  await putNar(s, nar)
  const info = narinfoFor(nar, { keys: [uploader.secretKey] })
  await assertRefused(s, await putNarinfo(s, nar.hashPart, formatNarInfo({ ...info, fileHash: narinfoFor(other).fileHash })), 400,
    'NARWHAL_NARINFO_INVALID', /narinfo field FileHash: .* is not the hash of/, nar.hashPart, 0)
  await assertRefused(s, await putNarinfo(s, nar.hashPart, formatNarInfo({ ...info, fileSize: 1n })), 400,
    'NARWHAL_NARINFO_INVALID', new RegExp(`narinfo field FileSize: 1 but .* has ${nar.bytes.length} bytes`), nar.hashPart, 0)
  await assertRefused(s, await putNarinfo(s, nar.hashPart, formatNarInfo({ ...info, url: `https://elsewhere.example/${nar.url}` })), 400,
    'NARWHAL_NARINFO_INVALID', /narinfo field URL: .* narwhal only serves NARs uploaded to it/, nar.hashPart, 0)
  await assertRefused(s, await putNarinfo(s, nar.hashPart, formatNarInfo({ ...info, url: `nar/../../${nar.url}` })), 400,
    'NARWHAL_NARINFO_INVALID', /narinfo field URL/, nar.hashPart, 0)
})

test('a StorePath that does not match the hash in the URL: 400', async (t) => {
  const s = await setup(t)
  const nar = await freshNar('xz')
  const elsewhere = await freshNar('xz')
  await putNar(s, nar)
  await assertRefused(s, await putNarinfo(s, elsewhere.hashPart, makeNarinfo(nar, { keys: [uploader.secretKey] })), 400,
    'NARWHAL_NARINFO_INVALID', new RegExp(`StorePath: ${nar.storePath} does not belong at ${elsewhere.hashPart}\\.narinfo`),
    elsewhere.hashPart, 0)
  assert.equal((await s.server.cache.metadata.narinfos.get(nar.hashPart)), undefined)
})

test('text Nix would misread (CRLF, duplicate field, NarSize 0, no final newline, no space, not UTF-8): 400', async (t) => {
  const s = await setup(t)
  const nar = await freshNar('xz')
  await putNar(s, nar)
  const good = makeNarinfo(nar, { keys: [uploader.secretKey] })
  const bad: Array<[string, string | Buffer, RegExp]> = [
    ['CRLF', good.replaceAll('\n', '\r\n'), /contains "\\r"/],
    ['duplicate StorePath', good + `StorePath: ${nar.storePath}\n`, /field StorePath: appears more than once/],
    ['duplicate NarHash', good + good.split('\n').find(l => l.startsWith('NarHash: ')) + '\n', /field NarHash: appears more than once/],
    ['NarSize 0', good.replace(/^NarSize: \d+$/m, 'NarSize: 0'), /field NarSize: must be a positive decimal integer/],
    ['NarSize with a leading zero', good.replace(/^NarSize: (\d+)$/m, 'NarSize: 0$1'), /field NarSize/],
    ['no final newline', good.slice(0, -1), /the last line must end in "\\n"/],
    ['Key:value without the space', good.replace('URL: ', 'URL:'), /must be "Key: value"/],
    ['missing NarHash', good.replace(/^NarHash: .*\n/m, ''), /field NarHash: is missing/],
    ['empty body', '', /the last line must end/],
    ['not UTF-8', Buffer.concat([Buffer.from(good), Buffer.from([0xff, 0xfe, 0x0a])]), /not valid UTF-8/]
  ]
  for (const [what, text, message] of bad) {
    const answer = await putNarinfo(s, nar.hashPart, text)
    assert.equal(answer.status, 400, `${what}: ${answer.body}`)
    assert.equal(ruleOf(answer), 'NARWHAL_NARINFO_INVALID', what)
    assert.match(answer.body, message, what)
  }
  assert.equal((await rowCounts(s.server)).narinfos, 0)
  // The good one is still accepted afterwards.
  assert.equal((await putNarinfo(s, nar.hashPart, good)).status, 201)
})

test('a narinfo over limits.narinfoBytes: 413 naming the limit', async (t) => {
  const s = await setup(t)
  const nar = await freshNar('xz')
  await putNar(s, nar)
  const info = narinfoFor(nar, { keys: [uploader.secretKey] })
  // 1000 signatures by unknown keys (ignored, as Nix ignores them) make ~100 KiB.
  const sigs = [...info.sigs, ...Array.from({ length: 1000 }, (_v, i) => `k${i}:${randomBytes(64).toString('base64')}`)]
  const text = formatNarInfo({ ...info, sigs })
  assert.ok(text.length > 64 * 1024)
  await assertRefused(s, await putNarinfo(s, nar.hashPart, text), 413, 'NARWHAL_TOO_LARGE', /limits\.narinfoBytes/, nar.hashPart, 0)
})

test('a narinfo sent with Content-Encoding (Nix 2.32+ narinfo-compression) is decoded; one that decodes past limits.narinfoBytes gets 413', { timeout: 60_000 }, async (t) => {
  const s = await setup(t)
  const nar = await freshNar('zstd')
  await putNar(s, nar)
  const text = makeNarinfo(nar, { keys: [uploader.secretKey] })
  const bzip2Text = await runBytes('bzip2', ['-c'], Buffer.from(text))
  assert.equal((await put(`${s.server.url}/${nar.hashPart}.narinfo`, bzip2Text, s.token, { 'content-encoding': 'bzip2' })).status, 201)
  assert.equal((await get(`${s.server.url}/${nar.hashPart}.narinfo`)).body, text)
  // Bombs: 256 MiB of zeros in a few KB, and for bzip2 that stream 39 times over (concatenated
  // streams are valid bzip2): 10 GiB in 64 KB. Decoded whole before the limit is looked at, as a
  // Transform would, it takes minutes and gigabytes; the limit must stop the decoding itself.
  const other = await freshNar('zstd')
  await putNar(s, other)
  for (const [encoding, tool, copies] of [['bzip2', 'bzip2 -1', 39], ['xz', 'xz -0 -T1', 1]] as const) {
    const one = await runBytes('sh', ['-c', `head -c ${256 * 1024 * 1024} /dev/zero | ${tool}`])
    const bomb = Buffer.concat(Array.from({ length: copies }, () => one))
    assert.ok(bomb.length <= 64 * 1024, `the ${encoding} bomb is ${bomb.length} bytes`)
    const answer = await put(`${s.server.url}/${other.hashPart}.narinfo`, bomb, s.token, { 'content-encoding': encoding })
    await assertRefused(s, answer, 413, 'NARWHAL_TOO_LARGE', /decompresses to more than the limit of 65536 bytes \(limits\.narinfoBytes\)/, other.hashPart, 1)
  }
})

test('a different NarHash for a path already stored: 409, and the first stays served', async (t) => {
  const s = await setup(t)
  const nar = await freshNar('xz')
  const other = await freshNar('xz')
  await putNar(s, nar)
  await putNar(s, other)
  const first = makeNarinfo(nar, { keys: [uploader.secretKey] })
  assert.equal((await putNarinfo(s, nar.hashPart, first)).status, 201)
  // Validly signed by a trusted key, for the same StorePath, but describing other content.
  const impostor = makeNarinfo({ ...other, storePath: nar.storePath, baseName: nar.baseName, hashPart: nar.hashPart },
    { keys: [uploader.secretKey] })
  const answer = await putNarinfo(s, nar.hashPart, impostor)
  assert.equal(answer.status, 409, answer.body)
  assert.equal(ruleOf(answer), 'NARWHAL_CONFLICT')
  assert.match(answer.body, new RegExp(`${nar.storePath} is already in this cache with NarHash sha256:[0-9a-z]{52}`))
  assert.equal((await rowCounts(s.server)).narinfos, 1)
  assert.equal((await get(`${s.server.url}/${nar.hashPart}.narinfo`)).body, first)
})

test('the same narinfo again: 200 unchanged; with a second trusted key\'s Sig: 200 merged, both Sigs served', async (t) => {
  const s = await setup(t)
  const nar = await freshNar('zstd')
  await putNar(s, nar)
  const first = makeNarinfo(nar, { keys: [uploader.secretKey] })
  assert.equal((await putNarinfo(s, nar.hashPart, first)).status, 201)

  const again = await putNarinfo(s, nar.hashPart, first)
  assert.equal(again.status, 200, again.body)
  assert.equal(again.body, 'unchanged\n')
  assert.equal((await get(`${s.server.url}/${nar.hashPart}.narinfo`)).body, first)

  // `nix store sign` re-PUTs the narinfo with the new signature only, or with both.
  const secondOnly = makeNarinfo(nar, { keys: [second.secretKey] })
  const merged = await putNarinfo(s, nar.hashPart, secondOnly)
  assert.equal(merged.status, 200, merged.body)
  assert.equal(merged.body, 'merged\n')
  const served = (await get(`${s.server.url}/${nar.hashPart}.narinfo`)).body
  const sigLines = served.split('\n').filter(l => l.startsWith('Sig: '))
  assert.equal(sigLines.length, 2, served)
  assert.ok(sigLines.some(l => l.startsWith('Sig: test-uploader-1:')))
  assert.ok(sigLines.some(l => l.startsWith('Sig: test-uploader-2:')))
  assert.equal(served, makeNarinfo(nar, { keys: [uploader.secretKey, second.secretKey] }))
  assert.equal((await rowCounts(s.server)).narinfos, 1)

  const both = await putNarinfo(s, nar.hashPart, served)
  assert.equal(both.status, 200)
  assert.equal(both.body, 'unchanged\n')
})
