/**
 * An object store that cannot be reached (NARWHAL_STORAGE_UNAVAILABLE, from storage/s3-objects.ts)
 * is answered 503 with Retry-After, so Nix and the pusher retry later; the body names the rule
 * but not the store's address or how it failed, which go to the log.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import Fastify from 'fastify'
import { NarwhalError } from '../../src/errors.js'
import { registerErrorHandler, STORAGE_RETRY_AFTER_SECONDS } from '../../src/server/error-handler.js'

test('NARWHAL_STORAGE_UNAVAILABLE is a 503 with Retry-After and a body without the store\'s details', async (t) => {
  const logged: string[] = []
  const app = Fastify({ logger: { level: 'info', stream: { write: (line: string) => { logged.push(line) } } } })
  t.after(async () => await app.close())
  registerErrorHandler(app)
  app.get('/nar/x', async () => {
    throw new NarwhalError('NARWHAL_STORAGE_UNAVAILABLE',
      'reading nar/x.nar in s3://bucket/ at http://10.1.2.3:7480: cannot reach the object store at http://10.1.2.3:7480 (ECONNREFUSED)')
  })
  const answer = await app.inject({ method: 'GET', url: '/nar/x' })
  assert.equal(answer.statusCode, 503)
  assert.equal(answer.headers['retry-after'], String(STORAGE_RETRY_AFTER_SECONDS))
  assert.match(answer.body, /^NARWHAL_STORAGE_UNAVAILABLE: /)
  assert.doesNotMatch(answer.body, /10\.1\.2\.3|ECONNREFUSED|bucket/)
  assert.ok(logged.some(line => line.includes('ECONNREFUSED')), 'the reason is in the log')
})
