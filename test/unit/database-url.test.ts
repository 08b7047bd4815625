import { test } from 'node:test'
import assert from 'node:assert/strict'
import { parseDatabaseUrl, redact } from '../../src/db/database-url.js'
import { isNarwhalError } from '../../src/errors.js'

function refusal (text: string): string {
  try {
    parseDatabaseUrl(text)
  } catch (err) {
    assert.ok(isNarwhalError(err) && err.code === 'NARWHAL_DATABASE_URL_INVALID', `${text}: ${String(err)}`)
    return err.message
  }
  assert.fail(`${text} was accepted`)
}

test('a postgres URL gives host, port, user, password, database and sslmode', () => {
  assert.deepEqual(parseDatabaseUrl('postgres://narwhal:s%40cret@db.example:6543/cache?sslmode=verify-full'), {
    kind: 'postgres',
    host: 'db.example',
    port: 6543,
    user: 'narwhal',
    password: 's@cret',
    database: 'cache',
    sslmode: 'verify-full',
    redacted: 'postgres://narwhal:***@db.example:6543/cache?sslmode=verify-full'
  })
  const plain = parseDatabaseUrl('postgresql://u@[::1]/d')
  assert.equal(plain.kind, 'postgres')
  if (plain.kind === 'postgres') {
    assert.equal(plain.host, '::1')
    assert.equal(plain.port, 5432)
    assert.equal(plain.password, undefined, 'no password: PGPASSWORD or ~/.pgpass')
    assert.equal(plain.sslmode, 'disable')
  }
})

test('text without a scheme is a SQLite file', () => {
  assert.deepEqual(parseDatabaseUrl('/var/lib/narwhal/narwhal.db'), { kind: 'sqlite', file: '/var/lib/narwhal/narwhal.db' })
})

test('bad URLs are refused naming the part at fault, never showing the password', () => {
  assert.match(refusal('mysql://u@h/d'), /scheme mysql/)
  assert.match(refusal('postgres://u:pw@h/d?sslmod=require'), /unknown parameter "sslmod"/)
  assert.match(refusal('postgres://u:pw@h/d?sslmode=allow'), /sslmode "allow"/)
  assert.match(refusal('postgres://h/d'), /names no user/)
  assert.match(refusal('postgres://u@h/'), /one database/)
  assert.match(refusal('postgres://u@h/a/b'), /one database/)
  assert.match(refusal(''), /empty/)
  for (const text of ['postgres://u:pw@h/d?sslmod=require', 'postgres://u:pw@h/', 'postgres://u:pw@h:99999/d', 'mysql://u:pw@h/d']) {
    assert.doesNotMatch(refusal(text), /pw/, text)
  }
  assert.equal(redact('postgres://u:pw@h/d'), 'postgres://u:***@h/d')
})
