/** Configuration: defaults, JSON file, NARWHAL_* environment, flags; bad input names the key. */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { writeFileSync, mkdtempSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { ConfigError, loadConfig, MAX_AUTO_WORKERS } from '../../src/config/config.js'

function configFile (content: unknown): string {
  const file = path.join(mkdtempSync(path.join(os.tmpdir(), 'narwhal-config-')), 'narwhal.json')
  writeFileSync(file, typeof content === 'string' ? content : JSON.stringify(content))
  return file
}

test('defaults: ./data, 127.0.0.1:5000, priority 30, public, no trusted key', () => {
  const config = loadConfig({}, {})
  assert.equal(config.dataDir, path.resolve('data'))
  assert.deepEqual(config.listen, { host: '127.0.0.1', port: 5000 })
  assert.equal(config.priority, 30)
  assert.equal(config.private, false)
  assert.deepEqual(config.trustedKeys, [])
  assert.ok(config.limits.narBytes > 4 * 1024 ** 3, 'NARs over 4 GiB are accepted by default')
  assert.equal(config.limits.narSizeBytes, 256 * 1024 ** 3, 'decompressed NARs: four times narBytes')
  assert.ok(Object.isFrozen(config))
})

test('file, then environment, then flags: each later one wins', () => {
  const file = configFile({ dataDir: 'from-file', listen: '0.0.0.0:6000', priority: 50, trustedKeys: ['file-1:a'], limits: { narinfoBytes: 1000, narSizeBytes: 2000 } })
  const fromFile = loadConfig({ configFile: file }, {})
  assert.equal(fromFile.dataDir, path.join(path.dirname(file), 'from-file'), 'relative paths in the file are relative to it')
  assert.deepEqual(fromFile.listen, { host: '0.0.0.0', port: 6000 })
  assert.equal(fromFile.priority, 50)
  assert.equal(fromFile.limits.narinfoBytes, 1000)
  assert.equal(fromFile.limits.narSizeBytes, 2000)
  assert.equal(fromFile.limits.logBytes, 64 * 1024 ** 2, 'limits not in the file keep their defaults')

  const env = { NARWHAL_CONFIG: file, NARWHAL_DATA: '/srv/env', NARWHAL_LISTEN: '[::1]:7000', NARWHAL_TRUSTED_KEYS: ' a-1:x   b-1:y ', NARWHAL_PRIVATE: 'true' }
  const fromEnv = loadConfig({}, env)
  assert.equal(fromEnv.dataDir, '/srv/env')
  assert.deepEqual(fromEnv.listen, { host: '::1', port: 7000 })
  assert.deepEqual(fromEnv.trustedKeys, ['a-1:x', 'b-1:y'])
  assert.equal(fromEnv.private, true)
  assert.equal(fromEnv.priority, 50, 'the file named by NARWHAL_CONFIG is read')

  const fromFlags = loadConfig({ dataDir: '/srv/flag', listen: '127.0.0.1:8000', trustedKeys: ['c-1:z'] }, env)
  assert.equal(fromFlags.dataDir, '/srv/flag')
  assert.equal(fromFlags.listen.port, 8000)
  assert.deepEqual(fromFlags.trustedKeys, ['c-1:z'])
})

test('unknown keys and bad values stop the start, naming the key', () => {
  const cases: Array<[unknown, RegExp]> = [
    [{ dataDri: 'x' }, /^dataDri: unknown setting/],
    [{ limits: { narbytes: 1 } }, /^limits\.narbytes: unknown setting/],
    [{ limits: { narBytes: -1 } }, /^limits\.narBytes: expected an integer >= 1/],
    [{ limits: { narSizeBytes: 0 } }, /^limits\.narSizeBytes: expected an integer >= 1/],
    [{ limits: { narSizeBytes: '256G' } }, /^limits\.narSizeBytes: expected an integer >= 1/],
    [{ priority: 'high' }, /^priority: expected an integer/],
    [{ listen: 'localhost' }, /^listen: expected HOST:PORT/],
    [{ listen: '127.0.0.1:70000' }, /^listen: expected HOST:PORT/],
    [{ private: 'yes' }, /^private: expected true or false/],
    [{ trustedKeys: 'a-1:x' }, /^trustedKeys: expected an array/],
    [{ logLevel: 'loud' }, /^logLevel: expected one of/],
    ['{ not json', /not valid JSON/]
  ]
  for (const [content, message] of cases) {
    assert.throws(() => loadConfig({ configFile: configFile(content) }, {}), (err: unknown) => err instanceof ConfigError && message.test(err.message),
      `config ${JSON.stringify(content)}`)
  }
  assert.throws(() => loadConfig({}, { NARWHAL_PRIORITY: '-3' }), /NARWHAL_PRIORITY: expected an integer >= 0/)
  assert.throws(() => loadConfig({}, { NARWHAL_PRIVATE: 'maybe' }), /NARWHAL_PRIVATE: expected true or false/)
  assert.throws(() => loadConfig({ configFile: '/nonexistent/narwhal.json' }, {}), /config file \/nonexistent\/narwhal.json: cannot be read \(ENOENT\)/)
})

test('rateLimit, timeouts and trustProxy: defaults, file, environment, and bad values naming the key', () => {
  const defaults = loadConfig({}, {})
  assert.deepEqual(defaults.rateLimit, { enabled: true, windowSeconds: 1, reads: 0, writes: 0, failedAuth: 30 })
  assert.deepEqual(defaults.timeouts, { idleSeconds: 60, headersSeconds: 30 })
  assert.deepEqual(defaults.trustProxy, [])

  const file = configFile({
    rateLimit: { reads: 5000, windowSeconds: 2 },
    timeouts: { idleSeconds: 120 },
    trustProxy: ['10.0.0.1', '192.168.0.0/16', 'fd00::/8', 'loopback']
  })
  const fromFile = loadConfig({ configFile: file }, {})
  assert.deepEqual(fromFile.rateLimit, { enabled: true, windowSeconds: 2, reads: 5000, writes: 0, failedAuth: 30 })
  assert.deepEqual(fromFile.timeouts, { idleSeconds: 120, headersSeconds: 30 })
  assert.deepEqual(fromFile.trustProxy, ['10.0.0.1', '192.168.0.0/16', 'fd00::/8', 'loopback'])

  const fromEnv = loadConfig({ configFile: file }, {
    NARWHAL_RATE_LIMIT: 'false',
    NARWHAL_RATE_LIMIT_WINDOW_SECONDS: '3',
    NARWHAL_RATE_LIMIT_READS: '0',
    NARWHAL_RATE_LIMIT_WRITES: '7',
    NARWHAL_RATE_LIMIT_FAILED_AUTH: '9',
    NARWHAL_IDLE_TIMEOUT_SECONDS: '5',
    NARWHAL_HEADERS_TIMEOUT_SECONDS: '4',
    NARWHAL_TRUST_PROXY: '127.0.0.1, ::1'
  })
  assert.deepEqual(fromEnv.rateLimit, { enabled: false, windowSeconds: 3, reads: 0, writes: 7, failedAuth: 9 })
  assert.deepEqual(fromEnv.timeouts, { idleSeconds: 5, headersSeconds: 4 })
  assert.deepEqual(fromEnv.trustProxy, ['127.0.0.1', '::1'])

  const cases: Array<[unknown, RegExp]> = [
    [{ rateLimit: { read: 1 } }, /^rateLimit\.read: unknown setting \(known: enabled, windowSeconds, reads, writes, failedAuth\)/],
    [{ rateLimit: { enabled: 'yes' } }, /^rateLimit\.enabled: expected true or false/],
    [{ rateLimit: { writes: -1 } }, /^rateLimit\.writes: expected an integer >= 0/],
    [{ rateLimit: { windowSeconds: 0 } }, /^rateLimit\.windowSeconds: expected an integer >= 1/],
    [{ rateLimit: { windowSeconds: 86400 } }, /^rateLimit\.windowSeconds: expected at most 3600 seconds/],
    [{ rateLimit: 5 }, /^rateLimit: expected an object/],
    [{ timeouts: { idleSeconds: 0 } }, /^timeouts\.idleSeconds: expected an integer >= 1/],
    [{ timeouts: { requestSeconds: 10 } }, /^timeouts\.requestSeconds: unknown setting/],
    [{ trustProxy: true }, /^trustProxy: expected an array/],
    [{ trustProxy: ['proxy.example'] }, /^trustProxy\[0\]: expected an IP address, a CIDR range/],
    [{ trustProxy: ['10.0.0.0/33'] }, /^trustProxy\[0\]: expected an IP address, a CIDR range/]
  ]
  for (const [content, message] of cases) {
    assert.throws(() => loadConfig({ configFile: configFile(content) }, {}), (err: unknown) => err instanceof ConfigError && message.test(err.message),
      `config ${JSON.stringify(content)}`)
  }
  assert.throws(() => loadConfig({}, { NARWHAL_RATE_LIMIT: 'on' }), /^ConfigError: NARWHAL_RATE_LIMIT: expected true or false/)
  assert.throws(() => loadConfig({}, { NARWHAL_RATE_LIMIT_READS: 'many' }), /NARWHAL_RATE_LIMIT_READS: expected an integer >= 0/)
  assert.throws(() => loadConfig({}, { NARWHAL_IDLE_TIMEOUT_SECONDS: '0' }), /NARWHAL_IDLE_TIMEOUT_SECONDS: expected an integer >= 1/)
  assert.throws(() => loadConfig({}, { NARWHAL_TRUST_PROXY: '*' }), /NARWHAL_TRUST_PROXY: expected an IP address/)
})

test('gc settings: sizes and durations from the file and NARWHAL_GC_*, "off", and errors naming the key', () => {
  const defaults = loadConfig({}, {}).gc
  assert.deepEqual(defaults, { maxSize: null, olderThan: null, interval: 3_600_000, unnamedNarGrace: 86_400_000, keepRecent: 3_600_000 })

  const file = configFile({ gc: { maxSize: '200G', olderThan: '90d', interval: '15m', unnamedNarGrace: '12h', keepRecent: '0' } })
  assert.deepEqual(loadConfig({ configFile: file }, {}).gc,
    { maxSize: 200 * 1024 ** 3, olderThan: 90 * 86_400_000, interval: 900_000, unnamedNarGrace: 43_200_000, keepRecent: 0 })
  assert.equal(loadConfig({ configFile: configFile({ gc: { maxSize: 1000 } }) }, {}).gc.maxSize, 1000, 'a number is bytes')

  const fromEnv = loadConfig({ configFile: file }, { NARWHAL_GC_MAX_SIZE: '1T', NARWHAL_GC_OLDER_THAN: 'off', NARWHAL_GC_INTERVAL: 'off', NARWHAL_GC_UNNAMED_NAR_GRACE: '90m', NARWHAL_GC_KEEP_RECENT: '2h' }).gc
  assert.deepEqual(fromEnv, { maxSize: 1024 ** 4, olderThan: null, interval: null, unnamedNarGrace: 5_400_000, keepRecent: 7_200_000 })

  const cases: Array<[unknown, RegExp]> = [
    [{ gc: { maxsize: '1G' } }, /^gc\.maxsize: unknown setting/],
    [{ gc: { maxSize: 'big' } }, /^gc\.maxSize: expected a size like 500M/],
    [{ gc: { maxSize: -1 } }, /^gc\.maxSize: expected a size/],
    [{ gc: { olderThan: '30 days' } }, /^gc\.olderThan: expected a duration like 90m, 12h, 30d/],
    [{ gc: { olderThan: 30 } }, /^gc\.olderThan: expected a duration/],
    [{ gc: { interval: '0' } }, /^gc\.interval: must be longer than 0/],
    [{ gc: { unnamedNarGrace: 'off' } }, /^gc\.unnamedNarGrace: expected a duration/],
    [{ gc: 'daily' }, /^gc: expected an object/]
  ]
  for (const [content, message] of cases) {
    assert.throws(() => loadConfig({ configFile: configFile(content) }, {}), (err: unknown) => err instanceof ConfigError && message.test(err.message),
      `config ${JSON.stringify(content)}`)
  }
  assert.throws(() => loadConfig({}, { NARWHAL_GC_MAX_SIZE: '20 gigs' }), /NARWHAL_GC_MAX_SIZE: expected a size/)
  assert.throws(() => loadConfig({}, { NARWHAL_GC_KEEP_RECENT: '1y' }), /NARWHAL_GC_KEEP_RECENT: expected a duration/)
})

test('workers: 1 by default; a number or "auto" from the file, NARWHAL_WORKERS or --workers; bad values name the key', () => {
  assert.equal(loadConfig({}, {}).workers, 1, 'one process unless asked')
  const auto = Math.min(os.availableParallelism(), MAX_AUTO_WORKERS)
  assert.equal(loadConfig({ configFile: configFile({ workers: 3 }) }, {}).workers, 3)
  assert.equal(loadConfig({ configFile: configFile({ workers: 'auto' }) }, {}).workers, auto)
  const file = configFile({ workers: 3 })
  assert.equal(loadConfig({ configFile: file }, { NARWHAL_WORKERS: '5' }).workers, 5, 'the environment beats the file')
  assert.equal(loadConfig({ configFile: file }, { NARWHAL_WORKERS: 'auto' }).workers, auto)
  assert.equal(loadConfig({ configFile: file, workers: '2' }, { NARWHAL_WORKERS: '5' }).workers, 2, 'the flag beats both')
  assert.equal(loadConfig({ workers: 'auto' }, {}).workers, auto)
  assert.ok(auto >= 1 && auto <= 8, `auto is between 1 and 8, got ${auto}`)

  const cases: Array<[unknown, RegExp]> = [
    [{ workers: 0 }, /^workers: expected a positive integer or "auto", got 0/],
    [{ workers: -2 }, /^workers: expected a positive integer or "auto"/],
    [{ workers: 1.5 }, /^workers: expected a positive integer or "auto"/],
    [{ workers: '4' }, /^workers: expected a positive integer or "auto", got "4"/],
    [{ workers: 'all' }, /^workers: expected a positive integer or "auto"/],
    [{ workers: null }, /^workers: expected a positive integer or "auto"/]
  ]
  for (const [content, message] of cases) {
    assert.throws(() => loadConfig({ configFile: configFile(content) }, {}), (err: unknown) => err instanceof ConfigError && message.test(err.message),
      `config ${JSON.stringify(content)}`)
  }
  assert.throws(() => loadConfig({}, { NARWHAL_WORKERS: '0' }), /^ConfigError: NARWHAL_WORKERS: expected a positive integer or "auto", got "0"/)
  assert.throws(() => loadConfig({}, { NARWHAL_WORKERS: 'two' }), /^ConfigError: NARWHAL_WORKERS: expected a positive integer or "auto"/)
  assert.throws(() => loadConfig({}, { NARWHAL_WORKERS: '2x' }), /^ConfigError: NARWHAL_WORKERS: expected a positive integer or "auto"/)
  assert.throws(() => loadConfig({ workers: '-1' }, {}), /^ConfigError: --workers: expected a positive integer or "auto"/)
})
