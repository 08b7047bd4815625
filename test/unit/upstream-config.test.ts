/**
 * The upstreams setting from flags, environment and config file, and netrc credentials: what is
 * accepted, what wins, and that every refusal names the setting.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { writeFileSync } from 'node:fs'
import path from 'node:path'
import { ConfigError, loadConfig } from '../../src/config/config.js'
import { parseNetrc } from '../../src/upstream/netrc.js'
import { Upstream } from '../../src/upstream/upstream.js'
import { tempDir } from '../helpers/nix.js'

const KEY = 'cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY='
const OTHER = 'other-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY='

function configFile (content: unknown): string {
  const file = path.join(tempDir('narwhal-config-'), 'config.json')
  writeFileSync(file, JSON.stringify(content))
  return file
}

test('flags: every --upstream in order, each with every --upstream-key, defaults for the rest', () => {
  const config = loadConfig({ upstreams: ['https://cache.nixos.org/', 'http://10.0.0.2:5000/cache'], upstreamKeys: [KEY, OTHER] }, {})
  assert.deepEqual(config.upstreams.map(u => u.url), ['https://cache.nixos.org', 'http://10.0.0.2:5000/cache'])
  for (const u of config.upstreams) {
    assert.deepEqual(u.publicKeys, [KEY, OTHER])
    assert.equal(u.connectSeconds, 3)
    assert.equal(u.answerSeconds, 5)
    assert.equal(u.negativeCacheSeconds, 60)
  }
})

test('environment: NARWHAL_UPSTREAMS and NARWHAL_UPSTREAM_KEYS, space-separated; flags win over them, and they over the file', () => {
  const file = configFile({ upstreams: [{ url: 'https://file.example', publicKeys: [KEY] }] })
  const env = { NARWHAL_CONFIG: file, NARWHAL_UPSTREAMS: 'https://a.example  https://b.example', NARWHAL_UPSTREAM_KEYS: `${KEY} ${OTHER}` }
  assert.deepEqual(loadConfig({}, { NARWHAL_CONFIG: file }).upstreams.map(u => u.url), ['https://file.example'])
  const fromEnv = loadConfig({}, env)
  assert.deepEqual(fromEnv.upstreams.map(u => u.url), ['https://a.example', 'https://b.example'])
  assert.deepEqual(fromEnv.upstreams[1]?.publicKeys, [KEY, OTHER])
  assert.deepEqual(loadConfig({ upstreams: ['https://flag.example'], upstreamKeys: [KEY] }, env).upstreams.map(u => u.url), ['https://flag.example'])
})

test('config file: token or netrc, timeouts, negative cache and backoff per upstream', () => {
  const file = configFile({
    upstreams: [
      { url: 'https://cache.nixos.org', publicKeys: [KEY] },
      { url: 'https://private.example', publicKeys: [OTHER], token: 'secret', timeouts: { connectSeconds: 1, answerSeconds: 2 }, negativeCacheSeconds: 0, failureBackoffSeconds: 10 }
    ]
  })
  const [first, second] = loadConfig({}, { NARWHAL_CONFIG: file }).upstreams
  assert.equal(first?.token, null)
  assert.deepEqual({ ...second }, {
    url: 'https://private.example', publicKeys: [OTHER], token: 'secret', netrcFile: null, connectSeconds: 1, answerSeconds: 2, negativeCacheSeconds: 0, failureBackoffSeconds: 10
  })
})

test('refusals name the setting', () => {
  const refused = (overrides: Parameters<typeof loadConfig>[0], env: NodeJS.ProcessEnv, pattern: RegExp): void => {
    assert.throws(() => loadConfig(overrides, env), (err: unknown) => err instanceof ConfigError && pattern.test(err.message))
  }
  refused({ upstreams: ['https://cache.nixos.org'] }, {}, /^--upstream: needs --upstream-key/)
  refused({ upstreamKeys: [KEY] }, {}, /^--upstream-key: given without --upstream/)
  refused({}, { NARWHAL_UPSTREAMS: 'ftp://x', NARWHAL_UPSTREAM_KEYS: KEY }, /^NARWHAL_UPSTREAMS: expected an http/)
  refused({ upstreams: ['https://user:pw@x.example'], upstreamKeys: [KEY] }, {}, /^--upstream: .*without query, fragment or credentials/)
  refused({}, { NARWHAL_CONFIG: configFile({ upstreams: {} }) }, /^upstreams: expected an array/)
  refused({}, { NARWHAL_CONFIG: configFile({ upstreams: [{ url: 'https://x.example', publicKeys: [] }] }) }, /^upstreams\[0\]\.publicKeys: expected a non-empty array/)
  refused({}, { NARWHAL_CONFIG: configFile({ upstreams: [{ url: 'https://x.example', publicKeys: [KEY], tokn: 'x' }] }) }, /^upstreams\[0\]\.tokn: unknown setting/)
  refused({}, { NARWHAL_CONFIG: configFile({ upstreams: [{ url: 'https://x.example', publicKeys: [KEY], timeouts: { answerSeconds: 0 } }] }) },
    /^upstreams\[0\]\.timeouts\.answerSeconds: expected a whole number/)
  refused({}, { NARWHAL_CONFIG: configFile({ upstreams: [{ url: 'https://x.example', publicKeys: [KEY], token: 'a', netrcFile: '/x' }] }) },
    /^upstreams\[0\]: give token or netrcFile, not both/)
})

test('a malformed upstream key is refused when the upstream is set up, naming it', () => {
  const [config] = loadConfig({ upstreams: ['https://cache.nixos.org'], upstreamKeys: ['cache.nixos.org-1:abc'] }, {}).upstreams
  assert.ok(config !== undefined)
  assert.throws(() => new Upstream(config, 0), (err: unknown) => err instanceof ConfigError && /^upstreams\[0\]\.publicKeys\[0\]: /.test(err.message))
})

test('netrc: the entry of the host, else default; none when neither has login and password', () => {
  const text = 'machine other.example login a password b\n\nmachine cache.example\n  login me\n  password s3cret\ndefault login d password e\n'
  assert.deepEqual(parseNetrc(text, 'cache.example'), { login: 'me', password: 's3cret' })
  assert.deepEqual(parseNetrc(text, 'unknown.example'), { login: 'd', password: 'e' })
  assert.equal(parseNetrc('machine x login a\n', 'x'), undefined)
})
