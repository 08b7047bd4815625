/**
 * `narwhal serve --storage s3://…` started while the bucket cannot be reached (its endpoint
 * refuses connections): it starts anyway, answers narinfos from the database and 503 +
 * Retry-After for NARs and uploads, and serves the NARs once the endpoint is back, by itself.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import path from 'node:path'
import { buildClosure, netrcFile, nixKeyPair, nixOk, tempDir } from '../helpers/nix.js'
import { createToken, spawnServer } from '../helpers/server-process.js'
import { awsEnv, createBucket, s3Engine, storageUrl } from '../helpers/s3.js'
import { TcpProxy } from '../helpers/tcp-proxy.js'
import { freshNar, put } from '../helpers/upload.js'

const engine = s3Engine()

for (const workers of ['1', '2']) {
  test(`serve --workers ${workers} starts while its bucket is unreachable, answers narinfos and 503 for NARs and uploads, and serves NARs once the bucket is back`, async (t) => {
    const key = await nixKeyPair('test-uploader-1')
    const bucket = await createBucket(engine)
    const target = new URL(engine.endpoint)
    const proxy = new TcpProxy({ host: target.hostname, port: Number(target.port) })
    await proxy.start()
    t.after(async () => await proxy.stop())
    const url = storageUrl({ ...engine, endpoint: `http://127.0.0.1:${proxy.port}` }, bucket)
    const dataDir = tempDir('narwhal-data-')
    const env = Object.fromEntries(Object.entries(awsEnv(engine)).filter(([k]) => k.startsWith('AWS_'))) as Record<string, string>
    const spawn = async (): Promise<Awaited<ReturnType<typeof spawnServer>>> =>
      await spawnServer({ dataDir, logFile: path.join(dataDir, 'serve.log'), trustedKeys: [key.publicKey], args: ['--storage', url, '--workers', workers], env })

    // A cache with one path in it, pushed while the bucket was reachable.
    const first = await spawn()
    const closure = await buildClosure({ dataBytes: 64 * 1024 })
    const token = await createToken(dataDir, 'push')
    await nixOk(['copy', '--to', `${first.url}?secret-key=${key.secretFile}`, closure.top], { config: [`netrc-file = ${netrcFile(token)}`] })
    await first.stop()

    await proxy.stop()
    const logBefore = first.log().length
    const server = await spawn()
    t.after(async () => await server.stop())
    assert.match(server.log().slice(logBefore), /NARWHAL_STORAGE_UNAVAILABLE/)
    const hash = path.basename(closure.top).slice(0, 32)
    const narinfo = await fetch(`${server.url}/${hash}.narinfo`)
    const text = await narinfo.text()
    assert.equal(narinfo.status, 200, text)
    const narUrl = /^URL: (.*)$/m.exec(text)?.[1]
    assert.ok(narUrl !== undefined, text)

    const unavailable = await fetch(`${server.url}/${narUrl}`)
    await unavailable.arrayBuffer()
    assert.equal(unavailable.status, 503)
    assert.ok(unavailable.headers.get('retry-after') !== null, 'a 503 for a NAR says when to retry')
    const fresh = await freshNar('xz')
    const upload = await put(`${server.url}/${fresh.url}`, fresh.bytes, token)
    assert.equal(upload.status, 503, upload.body)
    assert.ok(upload.headers['retry-after'] !== undefined, 'a 503 for an upload says when to retry')

    // The bucket is back: NARs are served without a restart.
    await proxy.start()
    const nar = await fetch(`${server.url}/${narUrl}`)
    const bytes = Buffer.from(await nar.arrayBuffer())
    assert.equal(nar.status, 200)
    assert.equal(bytes.length, Number(/^FileSize: (\d+)$/m.exec(text)?.[1]))
    const target2 = tempDir('narwhal-store-')
    await nixOk(['copy', '--from', server.url, '--to', target2, closure.top], { config: [`trusted-public-keys = ${key.publicKey}`] })
  })
}
