/**
 * Garbage collection judged by the real Nix client: closures pushed with `nix copy --to`, one of
 * them substituted (a read), one pinned with `narwhal pin`, then `narwhal gc --max-size` run as a
 * separate process on the live data folder. The unread closure goes entirely; the read and the
 * pinned closures still substitute completely into fresh stores, and every narinfo left names
 * only references the cache serves. The server's own schedule is exercised by `narwhal serve`.
 */
import { test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { existsSync, readFileSync } from 'node:fs'
import path from 'node:path'
import { backendFor } from '../helpers/backend.js'
import { buildClosure, netrcFile, nixKeyPair, nixOk, runOk, tempDir, type TestClosure } from '../helpers/nix.js'
import { startServer, type TestServer } from '../helpers/server.js'
import { freshNar, put, sleep } from '../helpers/upload.js'
import { freePort } from '../helpers/server-process.js'
import type { MetadataStore } from '../../src/db/metadata-store.js'

const CLI = path.resolve('dist/src/cli/main.js')

const hashOf = (storePath: string): string => path.basename(storePath).slice(0, 32)

async function status (url: string): Promise<number> {
  const response = await fetch(url)
  await response.arrayBuffer()
  return response.status
}

/** The NAR URLs of a closure's narinfos, read before they may be collected. */
async function narUrls (server: { url: string }, closure: TestClosure): Promise<string[]> {
  return await Promise.all(closure.all.map(async p => {
    const text = await (await fetch(`${server.url}/${hashOf(p)}.narinfo`)).text()
    const url = /^URL: (\S+)$/m.exec(text)?.[1]
    assert.ok(url !== undefined, text)
    return url
  }))
}

/** The NAR file row of each path of a closure, from the server's metadata store. */
async function closureFiles (server: TestServer, closure: TestClosure): Promise<Array<{ hashPart: string, fileHash: string, fileSize: number }>> {
  return await Promise.all(closure.all.map(async p => {
    const narinfo = await server.cache.metadata.narinfos.get(hashOf(p))
    const file = narinfo === undefined ? undefined : await server.cache.metadata.narFiles.getById(narinfo.narFileId)
    assert.ok(file !== undefined, `${p} and its NAR file are stored`)
    return { hashPart: hashOf(p), fileHash: file.fileHash, fileSize: file.fileSize }
  }))
}

/** NAR file bytes of a closure (a NAR file counted once per path naming it). */
async function closureBytes (server: TestServer, closure: TestClosure): Promise<number> {
  return (await closureFiles(server, closure)).reduce((sum, f) => sum + f.fileSize, 0)
}

async function assertSubstitutes (url: string, closure: TestClosure, trust: string): Promise<void> {
  const store = tempDir('narwhal-gc-store-')
  await nixOk(['copy', '--from', url, '--to', store, closure.top], { config: [trust] })
  for (const p of closure.all) assert.ok(existsSync(path.join(store, p)), `${p} was substituted`)
  assert.equal(readFileSync(path.join(store, closure.top, 'dep-ref'), 'utf8').trim(), closure.dep)
  await nixOk(['store', 'verify', '--recursive', '--store', store, closure.top], { config: [trust] })
}

/** Every narinfo the cache still holds names only references the cache serves. */
async function assertEveryReferenceServed (url: string, metadata: MetadataStore): Promise<number> {
  const refs = new Set((await metadata.narinfos.page(0, 10_000)).flatMap(n => n.references.map(r => r.slice(0, 32))))
  for (const h of refs) assert.equal(await status(`${url}/${h}.narinfo`), 200, `reference ${h} is served`)
  return refs.size
}

test('narwhal gc --max-size removes the unread closure entirely and keeps the read and the pinned ones whole', async (t) => {
  const key = await nixKeyPair('test-uploader-1')
  const server = await startServer(t, { trustedKeys: [key.publicKey] })
  const push = [`netrc-file = ${netrcFile((await server.token('push')))}`]
  const trust = `trusted-public-keys = ${key.publicKey}`
  const to = `${server.url}?secret-key=${key.secretFile}`

  // Pushed oldest first: without read tracking, `read` would be the least recently used.
  const read = await buildClosure()
  const unread = await buildClosure()
  const pinned = await buildClosure()
  for (const closure of [read, unread, pinned]) {
    await nixOk(['copy', '--to', to, closure.top], { config: push })
    await sleep(20)
  }
  const unreadNars = await narUrls(server, unread)
  // As if the pushes were last used an hour ago (in the same order): a read within a minute of
  // the last recorded use is not written again (TOUCH_RESOLUTION_MS), and this read must count.
  const anHourAgo = Date.now() - 3_600_000
  for (const [i, closure] of [read, unread, pinned].entries()) {
    for (const [j, f] of (await closureFiles(server, closure)).entries()) {
      await server.cache.metadata.retention.setLastUse([f.hashPart], [f.fileHash], anHourAgo + i * 1000 + j)
    }
  }
  await assertSubstitutes(server.url, read, trust)
  await server.app.narwhal.access.flush()

  const data = server.config.dataDir
  const pinOut = await runOk('node', [CLI, 'pin', 'add', pinned.top, '--note', 'release', '--data', data, ...(await backendFor(data)).args])
  assert.match(pinOut, /^pinned \/nix\/store\/\S+ and its closure until unpinned$/m)
  assert.match(await runOk('node', [CLI, 'pin', 'list', '--data', data, ...(await backendFor(data)).args]), new RegExp(`^${pinned.top}\tforever\t\\S+\trelease$`, 'm'))

  const total = await server.cache.metadata.retention.totalNarBytes()
  const maxSize = total - await closureBytes(server, unread)
  const dry = await runOk('node', [CLI, 'gc', '--max-size', String(maxSize), '--keep-recent', '0', '--dry-run', '-v', '--data', data, ...(await backendFor(data)).args])
  assert.match(dry, /^narwhal gc --dry-run: would remove 3 store paths and 3 NAR files/m)
  for (const p of unread.all) assert.match(dry, new RegExp(`^would remove ${p}$`, 'm'))
  assert.equal(await status(`${server.url}/${hashOf(unread.top)}.narinfo`), 200, 'the dry run removed nothing')

  const out = await runOk('node', [CLI, 'gc', '--max-size', String(maxSize), '--keep-recent', '0', '-v', '--data', data, ...(await backendFor(data)).args])
  assert.match(out, new RegExp(`^narwhal gc: removed 3 store paths and 3 NAR files, freed .*; NAR files now take .*\\(${maxSize} bytes\\)$`, 'm'))
  assert.deepEqual(out.split('\n').filter(l => l.startsWith('removed /nix/store/')).sort(), unread.all.map(p => `removed ${p}`).sort())

  for (const p of unread.all) assert.equal(await status(`${server.url}/${hashOf(p)}.narinfo`), 404, `${p} is gone`)
  for (const url of unreadNars) assert.equal(await status(`${server.url}/${url}`), 404, `${url} is gone`)
  await assertSubstitutes(server.url, read, trust)
  await assertSubstitutes(server.url, pinned, trust)
  assert.ok(await assertEveryReferenceServed(server.url, server.cache.metadata) >= 4)

  const metrics = await (await fetch(`${server.url}/metrics`)).text()
  assert.match(metrics, /^narwhal_gc_runs_total 1$/m)
  assert.match(metrics, /^narwhal_gc_removed_store_paths_total 3$/m)
  assert.match(metrics, new RegExp(`^narwhal_gc_remaining_bytes ${maxSize}$`, 'm'))

  // A tighter limit cannot touch the pinned closure, even though it was never read.
  const tight = await runOk('node', [CLI, 'gc', '--max-size', '1', '--keep-recent', '0', '--data', data, ...(await backendFor(data)).args])
  assert.match(tight, /^narwhal gc: removed 3 store paths/m)
  assert.match(tight, /the size limit of 1 bytes is not reached/)
  await assertSubstitutes(server.url, pinned, trust)
  assert.equal(await status(`${server.url}/${hashOf(read.top)}.narinfo`), 404)

  await runOk('node', [CLI, 'pin', 'remove', pinned.top, '--data', data, ...(await backendFor(data)).args])
  assert.doesNotMatch(await runOk('node', [CLI, 'pin', 'list', '--data', data, ...(await backendFor(data)).args]), /\/nix\/store/)
})

async function until (check: () => Promise<boolean> | boolean, what: string, ms = 60_000): Promise<void> {
  const deadline = Date.now() + ms
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await sleep(200)
  }
}

test('narwhal serve collects on its schedule: old paths, unnamed NARs past their grace, never a pinned closure', async (t: TestContext) => {
  const key = await nixKeyPair('test-uploader-1')
  const data = tempDir('narwhal-gc-schedule-')
  const trust = `trusted-public-keys = ${key.publicKey}`
  const old = await buildClosure()
  const kept = await buildClosure()
  const orphan = await freshNar('xz')
  {
    // Filled by a first server with the default schedule (hourly): nothing is collected yet.
    const first = await startServer(t, { trustedKeys: [key.publicKey], dataDir: data })
    const push = [`netrc-file = ${netrcFile((await first.token('push')))}`]
    for (const closure of [old, kept]) await nixOk(['copy', '--to', `${first.url}?secret-key=${key.secretFile}`, closure.top], { config: push })
    // A NAR whose narinfo never came (an interrupted push).
    assert.equal((await put(`${first.url}/${orphan.url}`, orphan.bytes, (await first.token('push')))).status, 201)
    await first.app.close()
  }
  await runOk('node', [CLI, 'pin', 'add', kept.top, '--data', data, ...(await backendFor(data)).args])
  await sleep(1500)

  const listen = `127.0.0.1:${await freePort()}`
  const child: ChildProcess = spawn('node', [CLI, 'serve'], {
    env: { ...process.env, ...(await backendFor(data)).env, NARWHAL_DATA: data, NARWHAL_LISTEN: listen, NARWHAL_GC_INTERVAL: '1s', NARWHAL_GC_OLDER_THAN: '1s', NARWHAL_GC_UNNAMED_NAR_GRACE: '1s' },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let output = ''
  child.stdout?.on('data', (d: Buffer) => { output += d.toString() })
  child.stderr?.on('data', (d: Buffer) => { output += d.toString() })
  t.after(() => { child.kill('SIGTERM') })
  const url = `http://${listen}`

  await until(() => /"msg":"gc run"/.test(output), 'a scheduled gc run')
  const run = output.split('\n').find(l => l.includes('"msg":"gc run"')) ?? ''
  const fields = JSON.parse(run) as { level: number, storePaths: number, narFiles: number, unnamedNarFiles: number, bytes: number }
  assert.equal(fields.level, 30, 'logged at info')
  assert.equal(fields.storePaths, 3)
  assert.equal(fields.narFiles, 3)
  assert.equal(fields.unnamedNarFiles, 1)
  for (const p of old.all) assert.equal(await status(`${url}/${hashOf(p)}.narinfo`), 404, `${p} was collected`)
  assert.equal(await status(`${url}/${orphan.url}`), 404, 'the unnamed NAR was collected')
  await assertSubstitutes(url, kept, trust)
  const metrics = await (await fetch(`${url}/metrics`)).text()
  assert.match(metrics, /^narwhal_gc_removed_store_paths_total 3$/m)

  // The schedule goes on, and a SIGTERM stops it and the server cleanly.
  await until(() => output.split('\n').filter(l => l.includes('"msg":"gc run"')).length >= 2, 'a second scheduled run')
  child.kill('SIGTERM')
  const [code] = (child.exitCode !== null ? [child.exitCode] : await once(child, 'exit')) as [number | null]
  assert.equal(code, 0, output)
  assert.doesNotMatch(output, /gc run failed|"level":50/)
})

test('after a gc, a pusher with Nix\'s default narinfo cache skips paths it uploaded before; narinfo-cache-positive-ttl = 0 fixes it', async (t) => {
  // What the README says about the client-side narinfo cache, shown with the real Nix 2.8.
  const key = await nixKeyPair('test-uploader-1')
  const server = await startServer(t, { trustedKeys: [key.publicKey] })
  const closure = await buildClosure()
  const pusherCache = tempDir('narwhal-pusher-cache-')
  const pushAs = async (ttl: string): Promise<void> => {
    await nixOk(['copy', '--to', `${server.url}?secret-key=${key.secretFile}`, closure.top], {
      config: [`netrc-file = ${netrcFile((await server.token('push')))}`, `narinfo-cache-positive-ttl = ${ttl}`],
      env: { XDG_CACHE_HOME: pusherCache }
    })
  }
  const held = async (): Promise<number> => (await Promise.all(closure.all.map(async p => await status(`${server.url}/${hashOf(p)}.narinfo`)))).filter(s => s === 200).length

  await pushAs('2592000')
  assert.equal(await held(), 3)
  await runOk('node', [CLI, 'gc', '--max-size', '0', '--keep-recent', '0', '--data', server.config.dataDir, ...(await backendFor(server.config.dataDir)).args])
  assert.equal(await held(), 0)

  await pushAs('2592000')
  assert.equal(await held(), 0, 'Nix trusted its cached narinfos and uploaded nothing, yet succeeded')
  await pushAs('0')
  assert.equal(await held(), 3, 'with a positive TTL of 0 Nix asks the server and uploads again')
})
