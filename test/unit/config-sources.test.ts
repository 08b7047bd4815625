/**
 * The configuration's sources as a user meets them: defaults, file, environment and flags, each
 * later one winning; errors that name the setting as that source spells it, the source and the
 * reason; the database and storage settings of issue 20; and the README's tables, which must
 * name every setting the schemas declare.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { ConfigError, configSchema, loadConfig, type ConfigOverrides } from '../../src/config/config.js'
import { settingsOf } from '../../src/config/settings.js'
import { loadPusherConfig, pusherSchema } from '../../src/pusher/config.js'

function configFile (content: unknown): string {
  const file = path.join(mkdtempSync(path.join(os.tmpdir(), 'narwhal-config-')), 'narwhal.json')
  writeFileSync(file, typeof content === 'string' ? content : JSON.stringify(content))
  return file
}

/** The ConfigError's message (fails when the load succeeds or throws something else). */
function refusal (overrides: ConfigOverrides, env: NodeJS.ProcessEnv): string {
  try {
    loadConfig(overrides, env)
  } catch (err) {
    assert.ok(err instanceof ConfigError, `a ConfigError, got ${String(err)}`)
    return err.message
  }
  assert.fail(`accepted ${JSON.stringify({ overrides, env })}`)
}

const PG = 'postgres://narwhal:secret@db.internal:5433/cache'
const S3 = 's3://nix-cache?region=eu-west-1&endpoint=rgw.internal:7480&scheme=http'

test('database and storage: unset they are the embedded ones, redirects off', () => {
  const config = loadConfig({}, {})
  assert.equal(config.database, null, 'the SQLite file in the data folder')
  assert.deepEqual(config.storage, { url: null, redirectNars: false }, 'the data folder')
})

test('database and storage from the file, then NARWHAL_DATABASE_URL / NARWHAL_STORAGE_URL, then --database / --storage', () => {
  const file = configFile({ database: 'postgresql://file@db.file/cache', storage: { url: 's3://file-bucket', redirectNars: true } })
  const fromFile = loadConfig({ configFile: file }, {})
  assert.equal(fromFile.database, 'postgresql://file@db.file/cache')
  assert.deepEqual(fromFile.storage, { url: 's3://file-bucket', redirectNars: true })

  const env = { NARWHAL_DATABASE_URL: PG, NARWHAL_STORAGE_URL: S3 }
  const fromEnv = loadConfig({ configFile: file }, env)
  assert.equal(fromEnv.database, PG)
  assert.deepEqual(fromEnv.storage, { url: S3, redirectNars: true }, 'the variable replaces the URL and keeps the file\'s redirectNars')

  const fromFlags = loadConfig({ configFile: file, database: 'postgres://flag@db.flag:5432/other', storage: 's3://flag-bucket?prefix=team-a/' }, env)
  assert.equal(fromFlags.database, 'postgres://flag@db.flag:5432/other')
  assert.equal(fromFlags.storage.url, 's3://flag-bucket?prefix=team-a/')

  assert.deepEqual(loadConfig({ configFile: configFile({ storage: S3 }) }, {}).storage, { url: S3, redirectNars: false },
    'a file may give storage as its URL alone')
  assert.equal(loadConfig({}, { NARWHAL_STORAGE_URL: S3, NARWHAL_STORAGE_REDIRECT_NARS: 'true' }).storage.redirectNars, true)
})

test('one setting through every source: the later source wins, an empty variable counts as unset', () => {
  const file = configFile({ listen: '0.0.0.0:6000', workers: 3 })
  assert.equal(loadConfig({}, {}).listen.port, 5000, 'default')
  assert.equal(loadConfig({ configFile: file }, {}).listen.port, 6000, 'file')
  assert.equal(loadConfig({ configFile: file }, { NARWHAL_LISTEN: '0.0.0.0:7000' }).listen.port, 7000, 'environment')
  assert.equal(loadConfig({ configFile: file, listen: '0.0.0.0:8000' }, { NARWHAL_LISTEN: '0.0.0.0:7000' }).listen.port, 8000, 'flag')
  assert.equal(loadConfig({ configFile: file }, { NARWHAL_LISTEN: '', NARWHAL_WORKERS: '  ' }).listen.port, 6000)
  assert.equal(loadConfig({ configFile: file }, { NARWHAL_WORKERS: '  ' }).workers, 3)
  assert.equal(loadConfig({}, { NARWHAL_CONFIG: file }).listen.port, 6000, 'NARWHAL_CONFIG names the file')
  assert.equal(loadConfig({ configFile: file }, { NARWHAL_CONFIG: configFile({ listen: '0.0.0.0:9000' }) }).listen.port, 6000, '--config wins over NARWHAL_CONFIG')
})

test('an error names the setting as its source spells it, the source, and the reason', () => {
  const file = configFile({ timeouts: { idleSeconds: 0 } })
  assert.equal(refusal({ configFile: file }, {}), `timeouts.idleSeconds: expected an integer >= 1, got 0 (config file ${file})`)
  assert.equal(refusal({}, { NARWHAL_IDLE_TIMEOUT_SECONDS: 'soon' }), 'NARWHAL_IDLE_TIMEOUT_SECONDS: expected an integer >= 1, got "soon" (environment)')
  assert.equal(refusal({ workers: 'many' }, {}), '--workers: expected a positive integer or "auto", got "many" (command line)')
  assert.match(refusal({ configFile: configFile({ storage: { url: S3, redirect: true } }) }, {}), /^storage\.redirect: unknown setting \(known: url, redirectNars\) \(config file /)
  assert.match(refusal({ configFile: configFile({ storage: 42 }) }, {}), /^storage: expected an s3:\/\/BUCKET\?… URL or \{ "url", "redirectNars" \}, got 42/)
  assert.match(refusal({}, { NARWHAL_STORAGE_REDIRECT_NARS: 'yes' }), /^NARWHAL_STORAGE_REDIRECT_NARS: expected true or false/)
  assert.match(refusal({}, { NARWHAL_STORAGE_REDIRECT_NARS: 'true' }), /^storage\.redirectNars: only an S3 storage can redirect NAR downloads/)
  assert.match(refusal({ configFile: configFile({ upstreams: [{ publicKeys: ['cache.nixos.org-1:x'] }] }) }, {}), /^upstreams\[0\]\.url: missing; expected an http:\/\/ or https:\/\/ URL/)
  // The value that wins is the one checked: a bad file value under a good variable does not stop the start.
  assert.equal(loadConfig({ configFile: configFile({ priority: -1 }) }, { NARWHAL_PRIORITY: '10' }).priority, 10)
})

test('database and storage URLs are kept as given for the cache opener to parse; other types are refused by key', () => {
  assert.equal(loadConfig({ database: 'postgres://narwhal@db.internal/cache?sslmode=require' }, {}).database,
    'postgres://narwhal@db.internal/cache?sslmode=require')
  assert.match(refusal({ configFile: configFile({ database: 5432 }) }, {}), /^database: expected a postgres:\/\/USER\[:PASS\]@HOST\[:PORT\]\/DB URL, got 5432 \(config file /)
  assert.match(refusal({ configFile: configFile({ storage: { url: true } }) }, {}), /^storage\.url: expected an s3:\/\/BUCKET\?… URL, got true \(config file /)
  assert.match(refusal({ configFile: configFile({ database: '' }) }, {}), /^database: expected a postgres:\/\/USER/)
})

test('pusher: the same sources and the same kind of errors', () => {
  const file = configFile({ server: 'http://file:1', concurrency: 2, compressionLevel: 1 })
  const config = loadPusherConfig({ configFile: file }, { NARWHAL_PUSH_CONCURRENCY: '8' })
  assert.equal(config.server, 'http://file:1')
  assert.equal(config.concurrency, 8, 'the environment beats the file')
  assert.equal(config.compressionLevel, 1)
  assert.equal(loadPusherConfig({}, {}).compressionLevel, undefined, 'the codec default unless given')
  assert.throws(() => loadPusherConfig({ configFile: configFile({ concurrency: 0 }) }, {}),
    (err: unknown) => err instanceof ConfigError && /^concurrency: expected an integer >= 1, got 0 \(config file .*\)$/.test(err.message))
  assert.throws(() => loadPusherConfig({}, { NARWHAL_MAX_RETRY_DELAY: 'never' }),
    (err: unknown) => err instanceof ConfigError && err.message === 'NARWHAL_MAX_RETRY_DELAY: expected an integer >= 1, got "never" (environment)')
})

test('the README names every setting of both schemas with its variable and flag', () => {
  const readme = readFileSync('README.md', 'utf8')
  const section = (title: string): string => {
    const start = readme.indexOf(`\n## ${title}\n`)
    assert.ok(start >= 0, `README has a section "${title}"`)
    const end = readme.indexOf('\n## ', start + 1)
    return readme.slice(start, end < 0 ? undefined : end)
  }
  const check = (text: string, schema: typeof configSchema | typeof pusherSchema, where: string): void => {
    for (const { keys, setting } of settingsOf(schema)) {
      const row = text.split('\n').find(line => line.startsWith(`| \`${keys.join('.')}\``) || line.startsWith(`| \`${keys[0] ?? ''}\` / `) ||
        line.includes(` / \`${keys.join('.')}\``))
      assert.ok(row !== undefined, `${where}: a row for ${keys.join('.')}`)
      if (setting.env !== undefined) assert.ok(row.includes(`\`${setting.env}\``), `${where}: ${keys.join('.')}'s row names ${setting.env}`)
      if (setting.flag !== undefined) assert.ok(row.includes(`\`--${setting.flag}\``), `${where}: ${keys.join('.')}'s row names --${setting.flag}`)
    }
  }
  check(section('Configuration'), configSchema, 'Configuration')
  check(section('The sidecar: pushing every build of a nix-daemon'), pusherSchema, 'the sidecar\'s table')
})
