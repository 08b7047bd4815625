import { test } from 'node:test'
import assert from 'node:assert/strict'
import { backoffDelay, isTransientStatus, parseRetryAfter, TransientError, withRetries, RefusedError } from '../../src/pusher/retry.js'

test('transient statuses: 408, 429 and 5xx; other 4xx are final', () => {
  for (const s of [408, 429, 500, 502, 503, 504]) assert.equal(isTransientStatus(s), true, String(s))
  for (const s of [400, 401, 403, 404, 409, 413, 415, 422]) assert.equal(isTransientStatus(s), false, String(s))
})

test('Retry-After as seconds or an HTTP date', () => {
  assert.equal(parseRetryAfter('7'), 7000)
  assert.equal(parseRetryAfter(undefined), undefined)
  assert.equal(parseRetryAfter('soon'), undefined)
  const now = Date.parse('2026-01-01T00:00:00Z')
  assert.equal(parseRetryAfter('Thu, 01 Jan 2026 00:00:30 GMT', now), 30_000)
})

test('backoff grows exponentially, is jittered, capped, and honours Retry-After', () => {
  const opts = { baseMs: 1000, maxMs: 60_000 }
  assert.equal(backoffDelay(0, { ...opts, random: () => 0 }), 500)
  assert.equal(backoffDelay(0, { ...opts, random: () => 1 }), 1000)
  assert.equal(backoffDelay(3, { ...opts, random: () => 1 }), 8000)
  assert.equal(backoffDelay(20, { ...opts, random: () => 1 }), 60_000)
  assert.equal(backoffDelay(0, { ...opts, random: () => 0 }, 20_000), 20_000, 'never sooner than Retry-After')
  assert.equal(backoffDelay(0, { ...opts, random: () => 0 }, 10_000_000), 60_000, 'Retry-After is capped too')
  const spread = new Set(Array.from({ length: 20 }, () => backoffDelay(4, opts)))
  assert.ok(spread.size > 1, 'jitter spreads retries')
})

test('withRetries retries transient failures only', async () => {
  let calls = 0
  const result = await withRetries(async () => {
    calls++
    if (calls < 3) throw new TransientError('503')
    return 'ok'
  }, 5, { baseMs: 1, maxMs: 2 })
  assert.equal(result, 'ok')
  assert.equal(calls, 3)
  calls = 0
  await assert.rejects(withRetries(async () => { calls++; throw new RefusedError('400', 400) }, 5, { baseMs: 1, maxMs: 2 }), RefusedError)
  assert.equal(calls, 1)
  calls = 0
  await assert.rejects(withRetries(async () => { calls++; throw new TransientError('down') }, 3, { baseMs: 1, maxMs: 2 }), TransientError)
  assert.equal(calls, 3)
})
