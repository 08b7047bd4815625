import { test } from 'node:test'
import assert from 'node:assert/strict'
import { writeFileSync } from 'node:fs'
import path from 'node:path'
import { ConfigError } from '../../src/config/config.js'
import { DEFAULT_QUEUE_DIR, loadPusherConfig, queueDirFromEnv } from '../../src/pusher/config.js'
import { tempDir } from '../helpers/nix.js'

test('defaults: zstd, queue in /var/lib/narwhal/queue, no keys', () => {
  const config = loadPusherConfig({}, {})
  assert.equal(config.compression, 'zstd')
  assert.equal(config.queueDir, DEFAULT_QUEUE_DIR)
  assert.deepEqual(config.secretKeyFiles, [])
  assert.equal(queueDirFromEnv({}), DEFAULT_QUEUE_DIR)
})

test('the contract environment names override the file', () => {
  const dir = tempDir()
  const file = path.join(dir, 'pusher.json')
  writeFileSync(file, JSON.stringify({ server: 'http://file:1', compression: 'xz', secretKeyFiles: ['rel.sk'], concurrency: 2 }))
  const config = loadPusherConfig({ configFile: file }, {
    NARWHAL_SERVER: 'http://env:5000/',
    NARWHAL_TOKEN_FILE: '/etc/narwhal/token',
    NARWHAL_SECRET_KEY_FILES: '/k/a.sk  /k/b.sk',
    NARWHAL_QUEUE_DIR: '/q',
    NARWHAL_SKIP_SIGNED_BY: 'cache.nixos.org-1'
  })
  assert.equal(config.server, 'http://env:5000')
  assert.equal(config.tokenFile, '/etc/narwhal/token')
  assert.deepEqual(config.secretKeyFiles, ['/k/a.sk', '/k/b.sk'])
  assert.equal(config.queueDir, '/q')
  assert.equal(config.compression, 'xz', 'from the file')
  assert.equal(config.concurrency, 2)
  assert.deepEqual(config.skipSignedBy, ['cache.nixos.org-1'])
  const fromFile = loadPusherConfig({ configFile: file }, {})
  assert.deepEqual(fromFile.secretKeyFiles, [path.join(dir, 'rel.sk')], 'relative paths are relative to the file')
})

test('unknown keys and bad values are refused, naming the key', () => {
  const file = path.join(tempDir(), 'pusher.json')
  writeFileSync(file, JSON.stringify({ sever: 'http://x' }))
  assert.throws(() => loadPusherConfig({ configFile: file }, {}), (err: Error) => err instanceof ConfigError && /^sever: unknown setting/.test(err.message))
  assert.throws(() => loadPusherConfig({}, { NARWHAL_COMPRESSION: 'bzip2' }), /NARWHAL_COMPRESSION: expected "zstd", "xz" or "none"/)
  assert.equal(loadPusherConfig({}, { NARWHAL_COMPRESSION: 'none' }).compression, 'none')
  assert.throws(() => loadPusherConfig({}, { NARWHAL_SERVER: 'ftp://x' }), /NARWHAL_SERVER: expected an http/)
  assert.throws(() => loadPusherConfig({}, { NARWHAL_PUSH_CONCURRENCY: '0' }), /NARWHAL_PUSH_CONCURRENCY/)
  assert.throws(() => loadPusherConfig({ requireServer: true }, {}), /server: no server URL/)
  assert.throws(() => loadPusherConfig({ requireKeys: true }, { NARWHAL_SERVER: 'http://x' }), /secretKeyFiles: no secret key file/)
})
