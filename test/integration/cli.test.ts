/**
 * The command-line contract, run as a user would: `narwhal serve` on an empty data folder sets
 * itself up and prints what to paste, the printed key and token work with the real `nix copy`,
 * the token is never printed again, and `narwhal token …` changes apply to the running server.
 */
import { test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { readdirSync } from 'node:fs'
import path from 'node:path'
import { generateKeyPair } from '../../src/signing/keys.js'
import { buildClosure, netrcFile, nix, nixOk, runOk, tempDir, testEachClient } from '../helpers/nix.js'
import { backendFor } from '../helpers/backend.js'
import { freePort } from '../helpers/server-process.js'

const CLI = path.resolve('dist/src/cli/main.js')

interface Served { child: ChildProcess, output: () => string, url: string }

/** Starts `narwhal serve` with the given env and waits until it answers. */
async function serve (t: TestContext, env: Record<string, string>, args: string[] = []): Promise<Served> {
  const data = env.NARWHAL_DATA ?? args[args.indexOf('--data') + 1] ?? ''
  const child = spawn('node', [CLI, 'serve', ...args], { env: { ...process.env, ...(await backendFor(data)).env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
  let output = ''
  child.stdout?.on('data', (d: Buffer) => { output += d.toString() })
  child.stderr?.on('data', (d: Buffer) => { output += d.toString() })
  t.after(() => { child.kill('SIGTERM') })
  const url = `http://${env.NARWHAL_LISTEN ?? ''}`
  // Up to 60 s: a loaded 2-core machine has taken over 10 s to start Node, Fastify and SQLite.
  let listeningAt: number | undefined
  for (let i = 0; i < 600; i++) {
    // The first-start message is printed after listen(); wait for it, or half a second after
    // listening (a restart prints none). Counted from listening, not from the start: a start
    // slower than half a second used to stop the wait before the message came.
    if (/Server listening/.test(output)) {
      listeningAt ??= i
      if (/first start/.test(output) || i - listeningAt > 5) break
    }
    if (child.exitCode !== null) throw new Error(`narwhal serve exited ${child.exitCode}: ${output}`)
    await new Promise(resolve => setTimeout(resolve, 100))
  }
  return { child, output: () => output, url }
}

async function stop (served: Served): Promise<void> {
  served.child.kill('SIGTERM')
  if (served.child.exitCode === null) await once(served.child, 'exit')
}

test('first start prints a working key and token once; token commands apply to the running server', async (t) => {
  const data = tempDir('narwhal-cli-data-')
  const env = { NARWHAL_DATA: data, NARWHAL_LISTEN: `127.0.0.1:${await freePort()}` }
  const first = await serve(t, env)
  const text = first.output()
  const publicKey = /extra-trusted-public-keys = (\S+)/.exec(text)?.[1]
  const token = /machine 127\.0\.0\.1 login narwhal password (nw_\S+)/.exec(text)?.[1]
  const secretKey = /secret key file: +(\S+)/.exec(text)?.[1]
  assert.ok(publicKey !== undefined && token !== undefined && secretKey !== undefined, `first-start message:\n${text}`)
  assert.equal(secretKey, path.join(data, 'keys', 'cache.secret'))

  const closure = await buildClosure()
  await nixOk(['copy', '--to', `${first.url}?secret-key=${secretKey}`, closure.top], { config: [`netrc-file = ${netrcFile(token)}`] })
  await nixOk(['store', 'verify', '--recursive', '--store', first.url, closure.top], { config: [`trusted-public-keys = ${publicKey}`] })

  // A restart on the same folder keeps key and data, and never shows the token again.
  await stop(first)
  const second = await serve(t, env)
  assert.doesNotMatch(second.output(), /nw_/)
  assert.doesNotMatch(second.output(), /first start/)
  await nixOk(['store', 'verify', '--recursive', '--store', second.url, closure.top], { config: [`trusted-public-keys = ${publicKey}`] })

  // A token created while the server runs works at once; revoked, it stops at once.
  const created = (await runOk('node', [CLI, 'token', 'create', '--scope', 'push', '--name', 'ci', '--data', data, ...(await backendFor(data)).args])).trim()
  assert.match(created, /^nw_[A-Za-z0-9_-]{43}$/)
  const list = await runOk('node', [CLI, 'token', 'list', '--data', data, ...(await backendFor(data)).args])
  const id = /^(\d+)\tpush\tci\t/m.exec(list)?.[1]
  assert.ok(id !== undefined, list)
  assert.doesNotMatch(list, /nw_/, 'token list never shows tokens')
  const other = await buildClosure()
  const push = (tok: string): Promise<{ code: number, stderr: string }> =>
    nix(['copy', '--to', `${second.url}?secret-key=${secretKey}`, other.top], { config: [`netrc-file = ${netrcFile(tok)}`] })
  await runOk('node', [CLI, 'token', 'revoke', id, '--data', data, ...(await backendFor(data)).args])
  const refused = await push(created)
  assert.notEqual(refused.code, 0)
  assert.match(refused.stderr, /NARWHAL_UNAUTHORIZED: the token is unknown, revoked or expired/)
  const fresh = (await runOk('node', [CLI, 'token', 'create', '--scope', 'push', '--data', data, ...(await backendFor(data)).args])).trim()
  assert.equal((await push(fresh)).code, 0)
})

test('serve takes --data, --listen and --trusted-key flags; a bad flag value names the flag', async (t) => {
  const data = tempDir('narwhal-cli-data-')
  const listen = `127.0.0.1:${await freePort()}`
  const key = generateKeyPair('someone-1').publicKeyText
  const served = await serve(t, { NARWHAL_LISTEN: listen }, ['--data', data, '--listen', listen, '--trusted-key', key])
  const text = served.output()
  assert.match(text, new RegExp(`extra-trusted-public-keys = ${key.replace(/[+/]/g, '\\$&')}`))
  assert.match(text, /secret key file: +YOUR-SECRET-KEY-FILE/, 'no key is generated when one is configured')
  const info = await (await fetch(`${served.url}/nix-cache-info`)).text()
  assert.equal(info, 'StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 30\n')

  const bad = spawn('node', [CLI, 'serve', '--data', tempDir(), '--listen', 'nonsense'], { stdio: ['ignore', 'pipe', 'pipe'] })
  let stderr = ''
  bad.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
  const [code] = await once(bad, 'exit') as [number]
  assert.equal(code, 2)
  assert.match(stderr, /--listen: expected HOST:PORT/)
})

testEachClient('a private cache substitutes with a read token in netrc and refuses without one', async (t, client) => {
  const data = tempDir('narwhal-cli-data-')
  const listen = `127.0.0.1:${await freePort()}`
  const first = await serve(t, { NARWHAL_DATA: data, NARWHAL_LISTEN: listen, NARWHAL_PRIVATE: 'true' })
  const text = first.output()
  const publicKey = /extra-trusted-public-keys = (\S+)/.exec(text)?.[1] ?? ''
  const token = /password (nw_\S+)/.exec(text)?.[1] ?? ''
  const closure = await buildClosure({ client })
  await client.nixOk(['copy', '--to', `${first.url}?secret-key=${path.join(data, 'keys', 'cache.secret')}`, closure.top],
    { config: [`netrc-file = ${netrcFile(token)}`] })
  const readToken = (await runOk('node', [CLI, 'token', 'create', '--scope', 'read', '--data', data, ...(await backendFor(data)).args])).trim()
  const trust = `trusted-public-keys = ${publicKey}`

  const without = await client.nix(['copy', '--from', first.url, '--to', tempDir(), closure.top], { config: [trust] })
  assert.notEqual(without.code, 0, 'no token: the private cache looks empty to Nix')
  // What the user is told: 2.8 hides the 401 of nix-cache-info, 2.26 shows narwhal's message.
  if (client.version === '2.8') assert.match(without.stderr, /does not appear to be a binary cache/)
  else assert.match(without.stderr, /nix-cache-info': HTTP error 401[\s\S]*NARWHAL_UNAUTHORIZED: this request needs a token with read scope/)
  assert.equal((await fetch(`${first.url}/${path.basename(closure.top).slice(0, 32)}.narinfo`)).status, 401)

  const store = tempDir('narwhal-store-')
  await client.nixOk(['copy', '--from', first.url, '--to', store, closure.top], { config: [trust, `netrc-file = ${netrcFile(readToken)}`] })
})

test('every command that opens the cache takes --database and --storage, and refuses a malformed one before creating anything', async () => {
  const data = tempDir('narwhal-cli-data-')
  const commands = [['serve'], ['token', 'create', '--scope', 'push'], ['token', 'list'], ['token', 'revoke', '1'], ['gc'], ['fsck'],
    ['pin', 'list'], ['pin', 'add', 'sl5fcaqm5v2ix71brj8j1wqv5xxjb6vq'], ['pin', 'remove', 'sl5fcaqm5v2ix71brj8j1wqv5xxjb6vq'], ['migrate'], ['audit']]
  const run = async (args: string[]): Promise<{ code: number, stderr: string }> => {
    const child = spawn('node', [CLI, ...args, '--data', data], { stdio: ['ignore', 'pipe', 'pipe'] })
    let stderr = ''
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
    const [code] = await once(child, 'exit') as [number]
    return { code, stderr }
  }
  assert.equal((await run(['migrate'])).code, 0)
  const before = readdirSync(data, { recursive: true }).sort()
  for (const command of commands) {
    const database = await run([...command, '--database', 'mysql://narwhal:s3cret@db.internal/cache'])
    assert.equal(database.code, 2, `${command.join(' ')}: ${database.stderr}`)
    assert.match(database.stderr, /database/, command.join(' '))
    assert.doesNotMatch(database.stderr, /s3cret/, 'the password is never shown')
    const storage = await run([...command, '--storage', '/srv/nars'])
    assert.equal(storage.code, 2, `${command.join(' ')}: ${storage.stderr}`)
    assert.match(storage.stderr, /storage URL "\/srv\/nars": expected s3:\/\/BUCKET/, command.join(' '))
  }
  // export's --storage and --database name where it moves the cache to: the same URL checks.
  const exported = await run(['export', '--storage', 's3://bucket', '--database', 'mysql://x@db/cache'])
  assert.equal(exported.code, 2)
  assert.match(exported.stderr, /database/)
  assert.deepEqual(readdirSync(data, { recursive: true }).sort(), before, 'nothing was created in the data folder')
})
