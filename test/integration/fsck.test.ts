/**
 * `narwhal fsck`, run as a real process against the data folder of a running server that the
 * real `nix copy --to` filled: every kind of damage is named and sets the exit status, --repair
 * removes each damaged path with its referrers so that everything left substitutes with Nix, a
 * second fsck is clean, and a re-push with `nix copy --to` heals the cache.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { closeSync, existsSync, mkdirSync, openSync, readSync, truncateSync, unlinkSync, utimesSync, writeFileSync, writeSync } from 'node:fs'
import path from 'node:path'
import { sqliteOnly, backendFor } from '../helpers/backend.js'
import { buildClosure, netrcFile, nix, nixKeyPair, nixOk, run, tempDir, type RunResult, type TestClosure } from '../helpers/nix.js'
import { startServer, type TestServer } from '../helpers/server.js'
import { fileHashOf } from '../helpers/upload.js'
import { sqliteDb } from '../helpers/sqlite.js'
import { narFilePath } from '../../src/storage/layout.js'
import { holdsObject, putNar, readNar, removeNar, replaceNar } from '../helpers/blobs.js'
import type { NarName } from '../../src/storage/blob-store.js'

const CLI = path.resolve('dist/src/cli/main.js')

async function fsck (dataDir: string, ...flags: string[]): Promise<RunResult> {
  return await run('node', [CLI, 'fsck', '--data', dataDir, ...(await backendFor(dataDir)).args, ...flags])
}

const hashPartOf = (storePath: string): string => path.basename(storePath).slice(0, 32)

async function narFileOf (server: TestServer, storePath: string): Promise<string> {
  const { metadata, layout } = server.cache
  const info = (await metadata.narinfos.get(hashPartOf(storePath)))
  assert.ok(info !== undefined, `${storePath} is in the cache`)
  const row = (await metadata.narFiles.getById(info.narFileId))
  assert.ok(row !== undefined)
  return narFilePath(layout, row.fileHash)
}

/**
 * After a --repair: the removed paths are gone (404, and Nix no longer finds `gone`), the kept
 * ones substitute whole, fsck is clean, and a re-push of the original closures heals the cache.
 */
async function afterRepair (server: TestServer, o: { removed: string[], gone: string, kept: string[], tops: string[], to: string, netrc: string[], trust: string[] }): Promise<void> {
  const dataDir = server.config.dataDir
  for (const storePath of o.removed) {
    assert.equal((await fetch(`${server.url}/${hashPartOf(storePath)}.narinfo`)).status, 404, `${storePath} is gone`)
  }
  const gone = await nix(['path-info', '--store', server.url, o.gone])
  assert.notEqual(gone.code, 0, 'Nix no longer finds a removed path')
  const survivors = tempDir('narwhal-store-')
  await nixOk(['copy', '--from', server.url, '--to', survivors, ...o.kept], { config: o.trust })
  await nixOk(['store', 'verify', '--recursive', '--store', server.url, ...o.kept], { config: o.trust })

  const again = await fsck(dataDir, '--verify-content')
  assert.equal(again.code, 0, again.stdout + again.stderr)
  assert.match(again.stdout, /: clean$/m)

  // A re-push of the original closures heals the cache (a fresh Nix cache folder per call, so
  // Nix does not remember the removed paths as present).
  await nixOk(['copy', '--to', o.to, ...o.tops], { config: o.netrc })
  const healed = tempDir('narwhal-store-')
  await nixOk(['copy', '--from', server.url, '--to', healed, ...o.tops], { config: o.trust })
  await nixOk(['store', 'verify', '--recursive', '--store', server.url, ...o.tops], { config: o.trust })
  const final = await fsck(dataDir, '--verify-content')
  assert.equal(final.code, 0, final.stdout + final.stderr)
}

/** Makes a file look untouched for two hours, older than fsck's default grace period. */
function age (file: string): void {
  const then = new Date(Date.now() - 2 * 60 * 60 * 1000)
  utimesSync(file, then, then)
}

function flipByte (file: string, offset: number): void {
  const fd = openSync(file, 'r+')
  try {
    const byte = Buffer.alloc(1)
    readSync(fd, byte, 0, 1, offset)
    writeSync(fd, Buffer.from([(byte[0] ?? 0) ^ 0xff]), 0, 1, offset)
  } finally {
    closeSync(fd)
  }
}

/** The NAR object of a stored path, as the blob store names it. */
async function narObjectOf (server: TestServer, storePath: string): Promise<NarName> {
  const info = await server.cache.metadata.narinfos.get(hashPartOf(storePath))
  assert.ok(info !== undefined, `${storePath} is in the cache`)
  const row = await server.cache.metadata.narFiles.getById(info.narFileId)
  assert.ok(row !== undefined)
  return row
}

function lines (out: string, pattern: RegExp): string[] {
  return out.split('\n').filter(l => pattern.test(l))
}

test('fsck finds lost, truncated, altered and rowless NAR objects on either backend; --repair and a re-push heal', async (t) => {
  const key = await nixKeyPair('test-uploader-1')
  const server = await startServer(t, { trustedKeys: [key.publicKey] })
  const dataDir = server.config.dataDir
  const { blobs } = server.cache
  const netrc = [`netrc-file = ${netrcFile((await server.token('push')))}`]
  const trust = [`trusted-public-keys = ${key.publicKey}`]
  const closures: TestClosure[] = []
  for (let i = 0; i < 3; i++) closures.push(await buildClosure())
  const [c1, c2, c3] = closures as [TestClosure, TestClosure, TestClosure]
  const to = `${server.url}?secret-key=${key.secretFile}`
  const tops = closures.map(c => c.top)
  await nixOk(['copy', '--to', to, ...tops], { config: netrc })
  assert.equal((await fsck(dataDir, '--verify-content')).code, 0, 'a freshly pushed cache is clean')

  // The damage, one kind per closure (data <- dep <- top), plus an object no row names.
  const missing = await narObjectOf(server, c1.data)
  await removeNar(blobs, missing) // a leaf dependency's NAR object is gone
  const truncated = await narObjectOf(server, c2.dep)
  const truncatedBytes = await readNar(blobs, truncated)
  assert.ok(truncatedBytes !== undefined)
  await replaceNar(blobs, truncated, truncatedBytes.subarray(0, 64))
  const flipped = await narObjectOf(server, c3.top)
  const flippedBytes = await readNar(blobs, flipped)
  assert.ok(flippedBytes !== undefined)
  flippedBytes[200] = (flippedBytes[200] ?? 0) ^ 0xff // same size: only --verify-content sees it
  await replaceNar(blobs, flipped, flippedBytes)
  const junk = randomBytes(1000)
  const dropped = { fileHash: fileHashOf(junk), compression: 'xz' }
  await putNar(blobs, dropped, junk)
  const narinfosBefore = (await server.cache.metadata.narinfos.count())
  // --grace 0: the object without a row counts as left by a crash, not as an upload in flight.
  const grace = ['--grace', '0']

  // Checking changes nothing, names every problem but the flipped byte, and exits 1.
  const quick = await fsck(dataDir, ...grace)
  assert.equal(quick.code, 1, quick.stdout + quick.stderr)
  assert.deepEqual(lines(quick.stdout, /^[a-z-]+ \S+: /).map(l => l.split(': ')[0]).sort(), [
    `nar-file-missing ${blobs.where(missing)}`,
    `nar-file-size ${blobs.where(truncated)}`,
    `unrecorded-nar-file ${blobs.where(dropped)}`
  ].sort())
  assert.match(quick.stdout, new RegExp(`^would remove ${c1.top}$`, 'm'), 'the dry run names the referrers too')
  assert.match(quick.stdout, /3 problems; --repair would remove 5 store paths/)
  assert.equal((await server.cache.metadata.narinfos.count()), narinfosBefore)
  assert.equal(await holdsObject(blobs, dropped), true)

  const full = await fsck(dataDir, ...grace, '--verify-content', '--json')
  assert.equal(full.code, 1)
  const report = JSON.parse(full.stdout) as { problems: Array<{ kind: string, subject: string, reason: string }>, repair: { dryRun: boolean } }
  assert.equal(report.repair.dryRun, true)
  const content = report.problems.find(p => p.kind === 'nar-file-content')
  assert.equal(content?.subject, blobs.where(flipped))
  assert.match(content?.reason ?? '', new RegExp(`not valid xz data|hash to sha256:\\S+, not to its name.*named by ${c3.top}`))

  // Repair: every damaged path goes with its referrers; what stays substitutes.
  const repaired = await fsck(dataDir, ...grace, '--repair', '--verify-content')
  assert.equal(repaired.code, 1, repaired.stdout + repaired.stderr)
  const removed = [c1.data, c1.dep, c1.top, c2.dep, c2.top, c3.top]
  assert.deepEqual(lines(repaired.stdout, /^removed \/nix\/store\//).map(l => l.slice('removed '.length)).sort(), [...removed].sort())
  assert.match(repaired.stdout, /4 problems; removed 6 store paths, 6 NAR files .* and 1 other file/)
  for (const name of [dropped, flipped, truncated]) assert.equal(await holdsObject(blobs, name), false)
  await afterRepair(server, { removed, gone: c3.top, kept: [c2.data, c3.data, c3.dep], tops, to, netrc, trust })
})

test('fsck names each kind of damage, --repair removes damaged paths with their referrers, a re-push heals', sqliteOnly('also a narinfo whose NAR file row was deleted with foreign keys off, and store/tmp leftovers: damage made by hand in the SQLite file and the folder'), async (t) => {
  const key = await nixKeyPair('test-uploader-1')
  const server = await startServer(t, { trustedKeys: [key.publicKey] })
  const dataDir = server.config.dataDir
  const netrc = [`netrc-file = ${netrcFile((await server.token('push')))}`]
  const trust = [`trusted-public-keys = ${key.publicKey}`]
  const closures: TestClosure[] = []
  for (let i = 0; i < 4; i++) closures.push(await buildClosure())
  const [c1, c2, c3, c4] = closures as [TestClosure, TestClosure, TestClosure, TestClosure]
  const to = `${server.url}?secret-key=${key.secretFile}`
  const tops = closures.map(c => c.top)
  await nixOk(['copy', '--to', to, ...tops], { config: netrc })
  assert.equal((await fsck(dataDir, '--verify-content')).code, 0, 'a freshly pushed cache is clean')

  // The damage, one kind per closure (data <- dep <- top), plus loose files.
  const missing = await narFileOf(server, c1.data)
  unlinkSync(missing) // a leaf dependency's NAR file is gone
  const truncated = await narFileOf(server, c2.dep)
  truncateSync(truncated, 64)
  const flipped = await narFileOf(server, c3.top)
  flipByte(flipped, 200) // same size: only --verify-content sees it
  const rowless = await narFileOf(server, c4.data)
  const db = sqliteDb(server.cache.metadata)
  db.pragma('foreign_keys = OFF') // the foreign key forbids this; a hand edit need not
  db.prepare('DELETE FROM nar_files WHERE id = (SELECT nar_file_id FROM narinfos WHERE hash_part = ?)').run(hashPartOf(c4.data))
  db.pragma('foreign_keys = ON')
  age(rowless)
  const junk = randomBytes(1000)
  const dropped = narFilePath(server.cache.layout, fileHashOf(junk))
  mkdirSync(path.dirname(dropped), { recursive: true })
  writeFileSync(dropped, junk)
  age(dropped)
  const crashedPart = path.join(server.cache.layout.tmpDir, 'crashed.part')
  writeFileSync(crashedPart, 'half an upload')
  age(crashedPart)
  const livePart = path.join(server.cache.layout.tmpDir, 'live.part')
  writeFileSync(livePart, 'an upload in flight')
  const narinfosBefore = (await server.cache.metadata.narinfos.count())

  // Checking changes nothing, names every problem but the flipped byte, and exits 1.
  const quick = await fsck(dataDir)
  assert.equal(quick.code, 1, quick.stdout + quick.stderr)
  assert.deepEqual(lines(quick.stdout, /^[a-z-]+ \/\S+: /).map(l => l.split(':')[0]).sort(), [
    `narinfo-without-nar-file ${c4.data}`,
    `nar-file-missing ${missing}`,
    `nar-file-size ${truncated}`,
    `unrecorded-nar-file ${rowless}`,
    `unrecorded-nar-file ${dropped}`,
    `stale-temp-file ${crashedPart}`
  ].sort())
  assert.match(quick.stdout, new RegExp(`^would remove ${c1.top}$`, 'm'), 'the dry run names the referrers too')
  assert.match(quick.stdout, new RegExp(`^in flight .*: ${livePart}$`, 'm'))
  assert.match(quick.stdout, /6 problems; --repair would remove 8 store paths/)
  assert.equal((await server.cache.metadata.narinfos.count()), narinfosBefore)
  assert.ok(existsSync(dropped) && existsSync(crashedPart))

  const full = await fsck(dataDir, '--verify-content', '--json')
  assert.equal(full.code, 1)
  const report = JSON.parse(full.stdout) as { problems: Array<{ kind: string, subject: string, reason: string }>, repair: { dryRun: boolean } }
  assert.equal(report.repair.dryRun, true)
  const content = report.problems.find(p => p.kind === 'nar-file-content')
  assert.equal(content?.subject, flipped)
  assert.match(content?.reason ?? '', new RegExp(`not valid xz data|hash to sha256:\\S+, not to its name.*named by ${c3.top}`))

  // Repair: every damaged path goes with its referrers; what stays substitutes.
  const repaired = await fsck(dataDir, '--repair', '--verify-content')
  assert.equal(repaired.code, 1, repaired.stdout + repaired.stderr)
  const removed = [c1.data, c1.dep, c1.top, c2.dep, c2.top, c3.top, c4.data, c4.dep, c4.top]
  assert.deepEqual(lines(repaired.stdout, /^removed \/nix\/store\//).map(l => l.slice('removed '.length)).sort(), [...removed].sort())
  assert.match(repaired.stdout, /7 problems; removed 9 store paths, 8 NAR files .* and 3 other files/)
  assert.equal(existsSync(livePart), true, 'an upload in flight is left alone')
  assert.equal(existsSync(crashedPart) || existsSync(dropped) || existsSync(flipped), false)
  await afterRepair(server, { removed, gone: c3.top, kept: [c2.data, c3.data, c3.dep], tops, to, netrc, trust })
})

test('fsck exit status: 2 for bad usage or no cache, 3 when --repair leaves a problem for a person', sqliteOnly('no cache = no narwhal.sqlite; a garbage SQLite file; a stray folder in store/nar'), async (t) => {
  const badGrace = await fsck(tempDir(), '--grace', 'soon')
  assert.equal(badGrace.code, 2)
  assert.match(badGrace.stderr, /--grace: expected a number of seconds/)
  const noCache = await fsck(path.join(tempDir(), 'nothing-here'))
  assert.equal(noCache.code, 2)
  assert.match(noCache.stderr, /no cache in .*narwhal\.sqlite does not exist/)
  const notADatabase = tempDir()
  writeFileSync(path.join(notADatabase, 'narwhal.sqlite'), 'garbage')
  const broken = await fsck(notADatabase)
  assert.equal(broken.code, 2)
  assert.match(broken.stderr, /cannot open .*narwhal\.sqlite: file is not a database/)

  const server = await startServer(t)
  const strayDir = path.join(server.cache.layout.narDir, 'backup')
  mkdirSync(strayDir, { recursive: true })
  const result = await fsck(server.config.dataDir, '--repair')
  assert.equal(result.code, 3, result.stdout + result.stderr)
  assert.match(result.stdout, new RegExp(`^stray-file ${strayDir}: .*left for you to look at$`, 'm'))
  assert.match(result.stdout, new RegExp(`^left: ${strayDir}$`, 'm'))
  assert.equal(existsSync(strayDir), true)
})
