/**
 * End to end, as in production: root runs nix-daemon with `post-build-hook = bin/narwhal-hook`
 * and the pusher; an unprivileged user in nix-users builds through the daemon; every output
 * reaches the cache signed by a key only root can read, and a fresh store substitutes it all
 * trusting only that key. Then the server goes away (builds still succeed, not slowed), comes
 * back (the queue drains), and the pusher is killed with SIGKILL mid-drain (nothing is lost).
 *
 * Declared once per side (daemon-hook.test.ts: the host's Nix 2.8; daemon-hook-2.26.test.ts: the
 * trixie root's Nix 2.26), so both run at once. The two differ in what the hook is given: Nix 2.8
 * leaves OUT_PATHS empty (the pusher asks the derivation), Nix 2.26 fills it; and the pusher of
 * the 2.26 side uploads uncompressed (`compression: none`), the other zstd.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { chmodSync, existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { openQueue } from '../../src/cli/open-queue.js'
import { ingestSpool, queueStatus } from '../../src/pusher/queue.js'
import { backendFor } from '../helpers/backend.js'
import { nixKeyPair, run, runOk, tempDir } from '../helpers/nix.js'
import { CLI, DAEMON_SOCKET, HOOK, USER, daemonAnswers, freePort, startChild, userDir, waitFor, writeChain, type Child, type DaemonSide } from './daemon.js'

const isRoot = process.getuid?.() === 0

export function daemonHookTest (side: DaemonSide): void {
  test(`${side.client.name}: the sidecar with the real multi-user nix-daemon`, { skip: isRoot ? false : 'needs root (starts nix-daemon)', timeout: 240_000 }, async (t) => {
    await scenario(t, side)
  })
}

async function scenario (t: test.TestContext, side: DaemonSide): Promise<void> {
  const client = side.client
  const work = tempDir('narwhal-e2e-')
  chmodSync(work, 0o755)
  const socket = side.socket(work)
  if (await daemonAnswers(socket)) {
    t.skip(`another nix-daemon already serves ${socket}; not touching it`)
    return
  }
  await side.ensureUser()
  const logs = work
  const home = userDir(work)
  const chain = writeChain(home)

  // The signing key: root's, in a folder everyone may list, so only the file mode protects it.
  const key = await nixKeyPair('e2e-cache-1')
  chmodSync(path.dirname(key.secretFile), 0o755)
  const dataDir = path.join(work, 'data')
  const queueDir = path.join(work, 'queue')
  const backend = await backendFor(dataDir)
  const token = (await runOk('node', [CLI, 'token', 'create', '--scope', 'push', '--data', dataDir, ...backend.args])).trim()
  const tokenFile = path.join(work, 'push-token')
  writeFileSync(tokenFile, token + '\n', { mode: 0o600 })
  const port = await freePort()
  const url = `http://127.0.0.1:${port}`

  const children: Child[] = []
  const socketExisted = existsSync(socket)
  t.after(async () => {
    for (const c of children.reverse()) await c.stop('SIGKILL')
    // Leave no stale socket behind: Nix's "auto" store would pick the daemon for non-root users.
    if (!socketExisted && socket === DAEMON_SOCKET) rmSync(DAEMON_SOCKET, { force: true })
  })

  const startServer = async (): Promise<Child> => {
    const server = startChild('server', 'node', [CLI, 'serve', '--data', dataDir, '--listen', `127.0.0.1:${port}`, '--trusted-key', key.publicKey],
      { ...process.env, ...backend.env, NARWHAL_LOG_LEVEL: 'warn' }, logs)
    children.push(server)
    await waitFor('the server', async () => {
      try { return (await fetch(`${url}/healthz`)).ok } catch { return false }
    })
    return server
  }
  const pusherEnv = {
    ...process.env,
    NARWHAL_SERVER: url,
    NARWHAL_TOKEN_FILE: tokenFile,
    NARWHAL_SECRET_KEY_FILES: key.secretFile,
    NARWHAL_QUEUE_DIR: queueDir,
    NARWHAL_MAX_RETRY_DELAY: '2',
    // One side pushes uncompressed (a large NAR streamed from the store as it is read), the other zstd.
    NARWHAL_COMPRESSION: client.version === '2.26' ? 'none' : 'zstd'
  }
  const startPusher = async (): Promise<Child> => {
    const pusher = side.start('pusher', ['node', CLI, 'pusher'], pusherEnv, logs)
    children.push(pusher)
    await waitFor('the pusher to start', () => readFileSync(pusher.log, 'utf8').includes('started:'))
    return pusher
  }
  const queueWait = (timeout: number): Promise<{ code: number, stderr: string }> =>
    run('node', [CLI, 'queue', 'wait', '--timeout', String(timeout)], { env: pusherEnv })

  let server = await startServer()
  let pusher = await startPusher()
  const daemon = side.start('nix-daemon', ['nix-daemon', '--option', 'post-build-hook', HOOK], {
    PATH: process.env.PATH,
    TMPDIR: process.env.TMPDIR,
    NARWHAL_QUEUE_DIR: queueDir,
    XDG_CACHE_HOME: path.join(work, 'daemon-cache'),
    NIX_DAEMON_SOCKET_PATH: socket,
    // Bookworm's nix.conf has sandbox = false, trixie's not; the chain's builders call /bin tools.
    NIX_CONFIG: 'substituters =\nrequire-sigs = true\nsandbox = false'
  }, logs)
  children.push(daemon)
  await waitFor('nix-daemon', () => daemonAnswers(socket))

  /** Builds the chain as the unprivileged user, through the daemon. Returns [a, b, c] and the time. */
  const buildAsUser = async (blobMiB = 0): Promise<{ paths: string[], ms: number }> => {
    const nonce = randomBytes(6).toString('hex')
    const started = Date.now()
    const command = `cd ${home} && ${side.userEnv(socket)} XDG_CACHE_HOME=${home}/cache-${nonce} ` +
      `nix-build --no-out-link ${chain} --argstr nonce ${nonce} --arg blobMiB ${blobMiB}`
    const result = await side.run(['su', USER, '-s', '/bin/sh', '-c', command])
    const ms = Date.now() - started
    assert.equal(result.code, 0, `build as ${USER}: ${result.stderr}`)
    // Nix 2.8 tells the user it runs the hook; 2.26 says nothing at the default verbosity (the
    // queue's jobs below show the hook ran).
    if (client.version === '2.8') assert.match(result.stderr, /running post-build-hook/)
    else assert.doesNotMatch(result.stderr, /post-build-hook/)
    assert.doesNotMatch(result.stderr, /could not record/)
    const top = result.stdout.trim()
    const paths = (await client.ok('nix-store', ['--query', '--requisites', top])).trim().split('\n')
    assert.equal(paths.length, 3)
    return { paths, ms }
  }
  const substitute = async (paths: string[]): Promise<void> => {
    const store = tempDir('narwhal-e2e-store-')
    const top = paths.find(p => p.includes('-e2e-c-')) ?? ''
    const trust = [`trusted-public-keys = ${key.publicKey}`]
    await client.nixOk(['copy', '--from', url, '--to', store, top], { config: trust })
    for (const p of paths) assert.ok(existsSync(path.join(store, p)), `${p} substituted`)
    await client.nixOk(['store', 'verify', '--recursive', '--store', store, top], { config: trust })
  }

  await t.test('a build by an unprivileged user reaches the cache; a fresh store substitutes every output', async () => {
    const { paths, ms } = await buildAsUser()
    t.diagnostic(`chain of 3 built through the daemon, server up: ${ms} ms`)
    const waited = await queueWait(60)
    assert.equal(waited.code, 0, waited.stderr)
    await substitute(paths)
    for (const p of paths) {
      const narinfo = await (await fetch(`${url}/${path.basename(p).slice(0, 32)}.narinfo`)).text()
      assert.match(narinfo, new RegExp(`\nCompression: ${pusherEnv.NARWHAL_COMPRESSION}\n`))
    }
    const log = readFileSync(pusher.log, 'utf8')
    // One log line per closure; jobs may be taken in any order, so an earlier closure can already
    // have uploaded a later job's paths. Each output is reported, and the three were uploaded once.
    for (const name of ['e2e-a-', 'e2e-b-', 'e2e-c-']) assert.match(log, new RegExp(`pushed \\S*${name}\\S*: \\d+ paths in closure`))
    const uploaded = [...log.matchAll(/paths in closure, (\d+) uploaded/g)].reduce((sum, m) => sum + Number(m[1]), 0)
    assert.equal(uploaded, 3, log)
    assert.ok(!log.includes(readFileSync(key.secretFile, 'utf8').split(':')[1]!.slice(0, 16)), 'no key material in the log')

    // What the hook was given, as the queue recorded it: one job per derivation built.
    const queue = openQueue(queueDir)
    try {
      const jobs = []
      for (let seq = 1; seq <= queue.lastSeq(); seq++) {
        const job = queue.job(seq)
        if (job !== undefined) jobs.push(job)
      }
      assert.equal(jobs.length, 3, 'a job per derivation')
      for (const job of jobs) assert.match(job.drvPath, /-e2e-[abc]-\w+\.drv$/)
      if (client.version === '2.8') {
        // Nix 2.8 leaves OUT_PATHS empty: the pusher asked each derivation for its outputs.
        for (const job of jobs) assert.deepEqual(job.outPaths, [], `${job.drvPath}: OUT_PATHS empty`)
      } else {
        // Nix 2.26 fills OUT_PATHS: the pusher took the outputs from it.
        assert.deepEqual(jobs.flatMap(j => j.outPaths).sort(), [...paths].sort())
      }
    } finally {
      queue.close()
    }
  })

  await t.test('the unprivileged user cannot read the secret key', async () => {
    const result = await side.run(['su', USER, '-s', '/bin/sh', '-c', `cat ${key.secretFile}`])
    assert.notEqual(result.code, 0)
    assert.match(result.stderr, /Permission denied/)
  })

  await t.test('with the server down builds succeed and are not slowed; when it returns the queue drains', async () => {
    const up = await buildAsUser()
    assert.equal((await queueWait(60)).code, 0)
    await server.stop()
    const down = await buildAsUser()
    t.diagnostic(`chain of 3, server up: ${up.ms} ms; server down: ${down.ms} ms`)
    assert.ok(down.ms < up.ms * 2 + 3000, `a build with the server down took ${down.ms} ms, with it up ${up.ms} ms`)
    const stuck = await queueWait(1)
    assert.equal(stuck.code, 124, 'nothing can drain while the server is down')
    const status = await runOk('node', [CLI, 'queue', 'status'], { env: pusherEnv })
    assert.match(status, /ECONNREFUSED/)
    server = await startServer()
    const drained = await queueWait(60)
    assert.equal(drained.code, 0, drained.stderr)
    await substitute(down.paths)
  })

  await t.test('kill -9 of the pusher mid-drain loses nothing', async () => {
    await pusher.stop('SIGKILL')
    const builds = []
    for (let i = 0; i < 3; i++) builds.push(await buildAsUser(24))
    const queue = openQueue(queueDir)
    try {
      const doneBefore = queue.status().counts.done
      pusher = await startPusher()
      // The pusher takes the jobs waiting together (one push for all): kill it while they are in flight.
      await waitFor('the drain under way', () => {
        ingestSpool(queue, queueDir)
        return queue.status().counts.running > 0
      }, 60_000)
      await pusher.stop('SIGKILL')
      const after = queueStatus(queue, queueDir)
      t.diagnostic(`killed with ${after.counts.done - doneBefore} of 9 jobs done, ${after.counts.running} in flight, ` +
        `${after.counts.pending + after.spooled} waiting`)
      assert.ok(after.counts.done - doneBefore < 9, 'killed before the drain finished')
    } finally {
      queue.close()
    }
    pusher = await startPusher()
    const drained = await queueWait(90)
    assert.equal(drained.code, 0, drained.stderr)
    for (const b of builds) await substitute(b.paths)
    const status = await runOk('node', [CLI, 'queue', 'status'], { env: pusherEnv })
    assert.match(status, /pending 0 {2}in flight 0 {2}done \d+ {2}failed 0/)
  })
}
