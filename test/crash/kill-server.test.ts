/**
 * `kill -9` of `narwhal serve` at random moments while many uploads run at once: real `nix copy`
 * pushes of closures (a few MB each, so a kill lands mid-body), slow hand-made PUTs dribbling
 * their bodies, a fast stream of small NAR + narinfo pairs chained by references (so a kill
 * often lands in a commit: fsync, rename, directory fsync, row insert), and an upload-batch
 * request like the pusher's.
 *
 * After every kill the server is restarted on the same data folder and must keep its promises
 * (test/helpers/cache-consistency.ts): store/tmp is empty, every file under store/nar is complete
 * under its final name, every narinfo served has its NAR complete and matching FileHash and its
 * references served, and every upload that was answered 2xx before the kill is still there.
 * At the end the interrupted pushes are re-run: Nix completes every closure, verifies it from the
 * cache and copies it into an empty store.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs'
import http from 'node:http'
import path from 'node:path'
import { UPLOAD_BATCH_ROUTE, type UploadBatchResponse } from '../../src/api/v1.js'
import type { Compression } from '../../src/nix/compression.js'
import { encodeNix32 } from '../../src/nix/nix32.js'
import { narString } from '../../src/nix/nar-encoding.js'
import { generateKeyPair, type SecretKey } from '../../src/signing/keys.js'
import { sqliteOnly } from '../helpers/backend.js'
import { checkServed, checkStored, fetchHashed, tempFiles } from '../helpers/cache-consistency.js'
import { NIX_MK, nix, nixEnv, nixKeyPair, nixOk, netrcFile, runOk, tempDir } from '../helpers/nix.js'
import { createToken, spawnServer, type ServerProcess } from '../helpers/server-process.js'
import { eventually, makeNarinfo, narFromBytes, runBytes, sleep, type Nar } from '../helpers/upload.js'

const ROUNDS = 6
/** Sizes of the random file in each round's closures: small, medium, a few MB. */
const CLOSURE_SIZES = [128 * 1024, 1024 * 1024, 4 * 1024 * 1024]
/** Two slow uploaders per round, each a chain of two NARs whose bodies take ~2 s to arrive. */
const SLOW_CHAINS = 2
const SLOW_CHAIN_LENGTH = 2
const SLOW_BODY_MS = 2000
/** One fast uploader per round: small NAR + narinfo pairs, each referencing the one before. */
const FAST_CHAIN_LENGTH = 30
const FAST_PAUSE_MS = 40
/** One upload-batch request per round (the pusher's route): a chain of 128-256 KB NARs. */
const BATCH_CHAIN_LENGTH = 8
/**
 * Kills land between these many milliseconds after their anchor, spread over the rounds. Even
 * rounds count from the start of the uploads (so a kill may find the server before its first
 * commit); odd rounds from the round's first stored narinfo, so that on a busy machine, where a
 * cold server takes seconds to get going, kills still land while it is committing.
 */
const KILL_AFTER_MS = [200, 3600] as const

interface Closure { top: string, dep: string, data: string, paths: string[] }
interface RawItem { nar: Nar, narinfo: string }
interface RoundFixtures { closures: Closure[], slowChains: RawItem[][], fastChain: RawItem[], batchChain: RawItem[] }

const rawItemsOf = (r: RoundFixtures): RawItem[] => [...r.slowChains.flat(), ...r.fastChain, ...r.batchChain]

const hashPartOf = (storePath: string): string => path.basename(storePath).slice(0, 32)

function pathNamed (lines: string, name: string): string {
  const found = lines.split('\n').find(l => l.endsWith(`-${name}`))
  if (found === undefined) throw new Error(`no store path named ${name} in:\n${lines}`)
  return found.trim()
}

/**
 * Each round's closures: per size, data ← top, and every top of a round also references one
 * shared dep (so the round's concurrent pushes race to upload it). Built with one
 * `nix-store --add` and one `nix-build` for all rounds: a process per path costs more than the
 * rounds themselves on a busy machine.
 */
async function buildClosures (rounds: number, sizes: number[]): Promise<Closure[][]> {
  const parent = tempDir('narwhal-crash-closures-')
  const plan = Array.from({ length: rounds }, () => ({
    nonce: randomBytes(6).toString('hex'),
    items: sizes.map(size => ({ nonce: randomBytes(6).toString('hex'), size, data: '' }))
  }))
  const dirs = plan.flatMap(r => r.items).map(({ nonce, size }) => {
    const dir = path.join(parent, `narwhal-crash-data-${nonce}`)
    mkdirSync(path.join(dir, 'sub'), { recursive: true })
    writeFileSync(path.join(dir, 'random.bin'), randomBytes(size))
    writeFileSync(path.join(dir, 'sub', 'text.txt'), `narwhal crash test ${nonce}\n`.repeat(500))
    symlinkSync('sub/text.txt', path.join(dir, 'link'))
    return dir
  })
  const added = await runOk('nix-store', ['--add', ...dirs], { env: nixEnv() })
  for (const item of plan.flatMap(r => r.items)) item.data = pathNamed(added, `narwhal-crash-data-${item.nonce}`)
  const expr = path.join(parent, 'closures.nix')
  const roundExprs = plan.map(r =>
    `(round "${r.nonce}" [ ${r.items.map(i => `{ nonce = "${i.nonce}"; data = ${JSON.stringify(i.data)}; }`).join(' ')} ])`)
  writeFileSync(expr, `
    let
      ${NIX_MK}
      round = nonce: items:
        let dep = mk "narwhal-crash-dep-\${nonce}" "/bin/mkdir $out; echo \${nonce} > $out/file";
        in map (i: mk "narwhal-crash-top-\${i.nonce}"
          "/bin/mkdir $out; echo \${dep} > $out/dep-ref; echo \${builtins.storePath i.data} > $out/data-ref") items;
    in builtins.concatLists [ ${roundExprs.join(' ')} ]
  `)
  // Each build waits on the Nix database more than on the CPU: build several at once.
  const built = await runOk('nix-build', ['--no-out-link', '--max-jobs', '4', expr], { env: nixEnv() })
  const tops = plan.flatMap(r => r.items).map(i => pathNamed(built, `narwhal-crash-top-${i.nonce}`))
  const refs = await runOk('nix-store', ['--query', '--references', ...tops], { env: nixEnv() })
  return plan.map(r => {
    const dep = pathNamed(refs, `narwhal-crash-dep-${r.nonce}`)
    return r.items.map(i => {
      const top = pathNamed(built, `narwhal-crash-top-${i.nonce}`)
      return { top, dep, data: i.data, paths: [i.data, dep, top] }
    })
  })
}

/** The NAR of a store path that is one non-executable regular file. */
function regularFileNar (contents: Buffer): Buffer {
  return Buffer.concat(['nix-archive-1', '(', 'type', 'regular', 'contents', contents, ')'].map(narString))
}

async function narOf (storePath: string, nar: Buffer, compression: Compression): Promise<Nar> {
  return await narFromBytes(storePath, nar, compression)
}

/** Signed narinfos for NARs in order, each referencing the one before (uploaded in that order). */
function chain (nars: Nar[], key: SecretKey): RawItem[] {
  return nars.map((nar, i) => {
    const previous = nars[i - 1]
    return { nar, narinfo: makeNarinfo(nar, { keys: [key], references: previous === undefined ? [] : [previous.baseName] }) }
  })
}

/**
 * The fast chain's first items use the costly methods once each (xz and brotli take 0.1-0.2 s
 * even for 3 KB on a busy machine, bzip2 a process), the rest alternate cheap ones.
 */
const FAST_METHODS_FIRST: Compression[] = ['xz', 'zstd', 'br', 'bzip2']
const FAST_METHODS_REST: Compression[] = ['none', 'gzip']
const SLOW_METHODS: Compression[] = ['none', 'gzip', 'zstd']

/**
 * Each round's hand-made uploads: SLOW_CHAINS chains of 1-2 MB store paths and a chain of
 * FAST_CHAIN_LENGTH 1-4 KB ones, each path one regular file. The server never sees the client's
 * store, so the paths are made up (random hash parts, as test/server/large-nar-over-4gib does):
 * registering hundreds of paths with `nix-store --add` and dumping each took longer than all the
 * rounds on a busy machine. The NAR format written here is checked once against
 * `nix-store --dump` of a real path.
 */
async function buildRawUploads (rounds: number, key: SecretKey): Promise<Array<Omit<RoundFixtures, 'closures'>>> {
  const sample = path.join(tempDir('narwhal-crash-raw-'), 'narwhal-crash-sample')
  const sampleContents = randomBytes(3000)
  writeFileSync(sample, sampleContents)
  const samplePath = (await runOk('nix-store', ['--add', sample], { env: nixEnv() })).trim()
  assert.ok((await runBytes('nix-store', ['--dump', samplePath])).equals(regularFileNar(sampleContents)),
    'the NAR of a one-file store path written here is what nix-store --dump writes')

  const nars = async (kind: string, count: number, minBytes: number, method: (i: number) => Compression): Promise<Nar[]> => {
    const list: Nar[] = []
    for (let i = 0; i < count; i++) {
      const storePath = `/nix/store/${encodeNix32(randomBytes(20))}-narwhal-crash-${kind}-${i}`
      const contents = randomBytes(minBytes + Math.floor(Math.random() * minBytes))
      list.push(await narOf(storePath, regularFileNar(contents), method(i)))
    }
    return list
  }
  const [slowNars, fastNars, batchNars] = await Promise.all([
    nars('slow', rounds * SLOW_CHAINS * SLOW_CHAIN_LENGTH, 1024 * 1024, i => SLOW_METHODS[i % SLOW_METHODS.length] ?? 'none'),
    nars('fast', rounds * FAST_CHAIN_LENGTH, 1024, i => {
      const inChain = i % FAST_CHAIN_LENGTH
      return FAST_METHODS_FIRST[inChain] ?? FAST_METHODS_REST[inChain % FAST_METHODS_REST.length] ?? 'none'
    }),
    nars('batch', rounds * BATCH_CHAIN_LENGTH, 128 * 1024, i => SLOW_METHODS[i % SLOW_METHODS.length] ?? 'none')
  ])
  const perRound = SLOW_CHAINS * SLOW_CHAIN_LENGTH
  return Array.from({ length: rounds }, (_, r) => ({
    slowChains: Array.from({ length: SLOW_CHAINS }, (_, c) =>
      chain(slowNars.slice(r * perRound + c * SLOW_CHAIN_LENGTH, r * perRound + (c + 1) * SLOW_CHAIN_LENGTH), key)),
    fastChain: chain(fastNars.slice(r * FAST_CHAIN_LENGTH, (r + 1) * FAST_CHAIN_LENGTH), key),
    batchChain: chain(batchNars.slice(r * BATCH_CHAIN_LENGTH, (r + 1) * BATCH_CHAIN_LENGTH), key)
  }))
}

/**
 * A PUT through node:http. With `bodyMs`, the body is written in 32 KiB pieces spread over that
 * time, so a kill finds it half received. Answers the status, or 0 when the connection failed
 * (the server was killed before or while answering).
 */
function putPaced (server: ServerProcess, urlPath: string, body: Buffer, token: string, contentType: string, bodyMs = 0): Promise<number> {
  return new Promise(resolve => {
    const req = http.request({
      host: '127.0.0.1',
      port: server.port,
      method: 'PUT',
      path: urlPath,
      agent: false,
      headers: { authorization: `Bearer ${token}`, 'content-type': contentType, 'content-length': body.length }
    }, res => {
      res.resume()
      res.on('end', () => resolve(res.statusCode ?? 0))
      res.on('error', () => resolve(0))
    })
    req.on('error', () => resolve(0))
    if (bodyMs === 0) { req.end(body); return }
    const piece = 32 * 1024
    const pause = Math.max(1, Math.round(bodyMs / Math.ceil(body.length / piece)));
    (async () => {
      for (let offset = 0; offset < body.length && !req.destroyed; offset += piece) {
        req.write(body.subarray(offset, offset + piece))
        await sleep(pause)
      }
      if (!req.destroyed) req.end()
    })().catch(() => resolve(0))
  })
}

interface Acked {
  /** Raw NARs answered 2xx: they must be downloadable after any later kill. */
  nars: Map<string, Nar>
  /** Hash parts whose narinfo was answered 2xx, or whose `nix copy` exited 0. */
  narinfos: Set<string>
}

/**
 * Uploads a chain in order (NAR, then its narinfo), as `nix copy` would, until the server dies.
 * Every answer must be 200 or 201: leftovers of an earlier kill must never make the server refuse
 * a correct upload. Returns true when the whole chain was stored.
 */
async function uploadChain (server: ServerProcess, items: RawItem[], token: string, acked: Acked, problems: string[],
  pace: { bodyMs: number, pauseMs: number }): Promise<boolean> {
  for (const item of items) {
    const narStatus = await putPaced(server, `/${item.nar.url}`, item.nar.bytes, token, 'application/x-nix-nar', pace.bodyMs)
    if (narStatus === 0) return false
    if (narStatus !== 200 && narStatus !== 201) { problems.push(`PUT ${item.nar.url}: ${narStatus}`); return false }
    acked.nars.set(item.nar.fileHash, item.nar)
    const narinfoStatus = await putPaced(server, `/${item.nar.hashPart}.narinfo`, Buffer.from(item.narinfo), token, 'text/x-nix-narinfo')
    if (narinfoStatus === 0) return false
    if (narinfoStatus !== 200 && narinfoStatus !== 201) { problems.push(`PUT ${item.nar.hashPart}.narinfo: ${narinfoStatus}`); return false }
    acked.narinfos.add(item.nar.hashPart)
    if (pace.pauseMs > 0) await sleep(pace.pauseMs)
  }
  return true
}

/**
 * Uploads a chain as one upload-batch request (NAR, narinfo, NAR, narinfo, …), as the pusher
 * does. Parts answered 200/201 count as acknowledged; any other part status is a problem. Returns
 * true when the whole chain was stored.
 */
async function uploadBatch (server: ServerProcess, items: RawItem[], token: string, acked: Acked, problems: string[]): Promise<boolean> {
  const problemsBefore = problems.length
  const form = new FormData()
  for (const item of items) {
    form.append(item.nar.url, new Blob([item.nar.bytes], { type: 'application/x-nix-nar' }), 'nar')
    form.append(`${item.nar.hashPart}.narinfo`, new Blob([item.narinfo], { type: 'text/x-nix-narinfo' }), 'narinfo')
  }
  let answer: UploadBatchResponse
  try {
    const response = await fetch(`${server.url}${UPLOAD_BATCH_ROUTE}`, { method: 'POST', body: form, headers: { authorization: `Bearer ${token}` } })
    if (response.status !== 200) { problems.push(`upload-batch: ${response.status} ${await response.text()}`); return false }
    answer = await response.json() as UploadBatchResponse
  } catch {
    return false // The server was killed before it answered: nothing is known to be stored.
  }
  for (const part of answer.results) {
    if (part.status !== 200 && part.status !== 201) { problems.push(`upload-batch part ${part.name}: ${part.status} ${part.message ?? ''}`); continue }
    const item = items.find(i => i.nar.url === part.name || `${i.nar.hashPart}.narinfo` === part.name)
    if (item === undefined) problems.push(`upload-batch answered for a part it was not sent: ${part.name}`)
    else if (part.name === item.nar.url) acked.nars.set(item.nar.fileHash, item.nar)
    else acked.narinfos.add(item.nar.hashPart)
  }
  return answer.results.length === items.length * 2 && problems.length === problemsBefore
}

interface CheckResult {
  problems: string[]
  narFiles: number
  /** Files under store/nar with no nar_files row: a kill between rename and insert. */
  filesWithoutRow: number
  /** NAR rows no narinfo points at (yet): a kill between a NAR and its narinfo. */
  narsWithoutNarinfo: number
  narinfos: number
}

/** Everything the cache must guarantee after a (re)start, before anything new is uploaded. */
async function checkCache (server: ServerProcess, dataDir: string, attempted: Set<string>, acked: Acked): Promise<CheckResult> {
  const problems: string[] = []
  const stored = await checkStored(dataDir)
  problems.push(...stored.problems)
  const served = await checkServed(server.url, [...stored.narinfoHashParts, ...attempted], new Set([...stored.narinfoHashParts, ...acked.narinfos]))
  problems.push(...served.problems)
  for (const nar of acked.nars.values()) {
    const got = await fetchHashed(`${server.url}/${nar.url}`)
    if (got.status !== 200 || got.fileHash !== nar.fileHash) {
      problems.push(`${nar.url} was answered 2xx before a kill, now ${got.status} with ${got.bytes} bytes hashing to ${got.fileHash}`)
    }
  }
  return {
    problems,
    narFiles: stored.narFiles,
    filesWithoutRow: stored.filesWithoutRow,
    narsWithoutNarinfo: stored.narsWithoutNarinfo,
    narinfos: served.served.size
  }
}

/** Kill moments spread evenly over KILL_AFTER_MS (one per slice, at a random point in it), shuffled. */
function killDelays (rounds: number): number[] {
  const [from, to] = KILL_AFTER_MS
  const slice = (to - from) / rounds
  const delays = Array.from({ length: rounds }, (_, i) => Math.round(from + (i + Math.random()) * slice))
  for (let i = delays.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1))
    const a = delays[i] ?? 0
    delays[i] = delays[j] ?? 0
    delays[j] = a
  }
  return delays
}

test('kill -9 during concurrent nix copy pushes and raw PUTs: after each restart, nothing partial is visible and every narinfo served is whole', { ...sqliteOnly('proves each kill landed mid-upload by the temp files left in store/tmp (a bucket keeps small uploads in memory)'), timeout: 15 * 60_000 }, async (t) => {
  const nixKey = await nixKeyPair('narwhal-crash-nix-1')
  const rawKey = generateKeyPair('narwhal-crash-raw-1')
  const dataDir = tempDir('narwhal-crash-data-')
  const logFile = path.join(tempDir('narwhal-crash-log-'), 'serve.log')
  const trustedKeys = [nixKey.publicKey, rawKey.publicKeyText]
  const token = await createToken(dataDir, 'push')
  const netrc = `netrc-file = ${netrcFile(token)}`

  const started = Date.now()
  const timed = async <T>(what: string, work: Promise<T>): Promise<T> => {
    const result = await work
    t.diagnostic(`${what} built in ${Date.now() - started} ms`)
    return result
  }
  const [closures, raw] = await Promise.all([
    timed('closures', buildClosures(ROUNDS, CLOSURE_SIZES)),
    timed('raw uploads', buildRawUploads(ROUNDS, rawKey.secretKey))
  ])
  const rounds: RoundFixtures[] = raw.map((r, i) => ({ ...r, closures: closures[i] ?? [] }))

  let server = await spawnServer({ dataDir, logFile, trustedKeys })
  t.after(async () => { await server.kill() })
  const attempted = new Set<string>()
  const acked: Acked = { nars: new Map(), narinfos: new Set() }
  const push = (tops: string[]): Promise<{ code: number, stderr: string }> =>
    nix(['copy', '--to', `${server.url}?secret-key=${nixKey.secretFile}&compression=zstd`, ...tops],
      // One attempt: a push the kill interrupted fails at once instead of retrying for seconds.
      { config: [netrc, 'download-attempts = 1'] })

  let interrupted: Closure[] = []
  const tempFilesLeft: number[] = []
  const delays = killDelays(ROUNDS)
  for (const [round, fixtures] of rounds.entries()) {
    const roundStarted = Date.now()
    const problems: string[] = []
    for (const c of fixtures.closures) for (const p of c.paths) attempted.add(hashPartOf(p))
    for (const item of rawItemsOf(fixtures)) attempted.add(item.nar.hashPart)

    // Everything at once: each new closure in its own nix copy, the closures the last kill
    // interrupted in one more, the slow chains, the fast chain and the batch.
    const pushes = [...fixtures.closures.map(c => [c]), ...(interrupted.length > 0 ? [interrupted] : [])]
      .map(async (group) => ({ group, result: await push(group.map(c => c.top)) }))
    const uploads = [
      ...fixtures.slowChains.map(items => uploadChain(server, items, token, acked, problems, { bodyMs: SLOW_BODY_MS, pauseMs: 0 })),
      uploadChain(server, fixtures.fastChain, token, acked, problems, { bodyMs: 0, pauseMs: FAST_PAUSE_MS }),
      uploadBatch(server, fixtures.batchChain, token, acked, problems)
    ]
    const uploadsBegan = Date.now()
    const delay = delays[round] ?? 0
    const anchor = round % 2 === 0 ? 'the uploads began' : 'the first narinfo was stored'
    if (round % 2 === 1) {
      const before = acked.narinfos.size
      await eventually(() => acked.narinfos.size > before, 30_000)
    }
    await sleep(delay)
    await server.kill()
    const killedAt = Date.now()

    const finished = await Promise.all(pushes)
    const chainsComplete = (await Promise.all(uploads)).filter(Boolean).length
    const pushesComplete = finished.filter(f => f.result.code === 0).length
    interrupted = []
    for (const { group, result } of finished) {
      if (result.code === 0) {
        for (const c of group) for (const p of c.paths) acked.narinfos.add(hashPartOf(p))
      } else {
        interrupted.push(...group)
        // The only acceptable failure is the connection dying; a refusal would name its rule.
        if (/NARWHAL_/.test(result.stderr)) problems.push(`nix copy was refused, not cut off:\n${result.stderr}`)
      }
    }
    const left = tempFiles(dataDir).length
    tempFilesLeft.push(left)

    const clientsMs = Date.now() - killedAt
    server = await spawnServer({ dataDir, logFile, trustedKeys })
    const restartMs = Date.now() - killedAt - clientsMs
    const check = await checkCache(server, dataDir, attempted, acked)
    problems.push(...check.problems)
    t.diagnostic(`round ${round + 1}: killed ${delay} ms after ${anchor} (${killedAt - uploadsBegan} ms after the uploads began); nix copy finished ${pushesComplete}/${finished.length}, ` +
      `raw uploads finished ${chainsComplete}/${uploads.length}; the kill left ${left} temp files (gone after the start), ` +
      `${check.filesWithoutRow} NAR files without a row, ${check.narsWithoutNarinfo} NARs without a narinfo; ` +
      `${check.narinfos} narinfos served, ${check.narFiles} NAR files on disk ` +
      `(round ${Date.now() - roundStarted} ms: clients ended ${clientsMs} ms after the kill, restart ${restartMs} ms)`)
    assert.deepEqual(problems, [], `round ${round + 1} (kill ${delay} ms after ${anchor}); server log tail:\n${server.log().slice(-3000)}`)
  }
  assert.ok(tempFilesLeft.some(n => n > 0), `no kill landed during an upload body (temp files left per round: ${tempFilesLeft.join(', ')})`)

  const finalStarted = Date.now()
  // After the last kill the server still takes uploads: every raw chain goes in whole, and a
  // re-run nix copy completes every closure the kills interrupted.
  const problems: string[] = []
  for (const fixtures of rounds) {
    for (const items of [...fixtures.slowChains, fixtures.fastChain]) {
      assert.equal(await uploadChain(server, items, token, acked, problems, { bodyMs: 0, pauseMs: 0 }), true, problems.join('\n'))
    }
    assert.equal(await uploadBatch(server, fixtures.batchChain, token, acked, problems), true, problems.join('\n'))
  }
  const allClosures = rounds.flatMap(r => r.closures)
  const tops = allClosures.map(c => c.top)
  await nixOk(['copy', '--to', `${server.url}?secret-key=${nixKey.secretFile}&compression=zstd`, ...tops], { config: [netrc] })
  for (const c of allClosures) for (const p of c.paths) acked.narinfos.add(hashPartOf(p))
  const final = await checkCache(server, dataDir, attempted, acked)
  assert.deepEqual([...problems, ...final.problems], [])
  assert.equal(final.narinfos, attempted.size, 'every store path of every round is served')

  // Nix itself checks the whole cache: signatures and NAR hashes, then substitutes every closure.
  const trust = `trusted-public-keys = ${trustedKeys.join(' ')}`
  const rawPaths = rounds.flatMap(rawItemsOf).map(i => i.nar.storePath)
  await nixOk(['store', 'verify', '--recursive', '--store', server.url, ...tops, ...rawPaths], { config: [trust] })
  const store = tempDir('narwhal-crash-store-')
  await nixOk(['copy', '--from', server.url, '--to', store, ...tops], { config: [trust] })
  for (const c of allClosures) {
    assert.equal(readFileSync(path.join(store, c.top, 'dep-ref'), 'utf8').trim(), c.dep)
    assert.ok(readFileSync(path.join(store, c.data, 'random.bin')).equals(readFileSync(path.join(c.data, 'random.bin'))), `${c.data} copied whole`)
  }
  await server.stop()
  t.diagnostic(`final re-push, checks, verify and substitution: ${Date.now() - finalStarted} ms; total ${Date.now() - started} ms`)
})
