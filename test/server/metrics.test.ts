/** GET /metrics reports requests by route and status, and refusals by error code (a miss is not a refusal). */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { startServer } from '../helpers/server.js'

test('metrics count requests by route and status, and refusals by code', async (t) => {
  const server = await startServer(t)
  assert.equal((await fetch(`${server.url}/nix-cache-info`)).status, 200)
  assert.equal((await fetch(`${server.url}/00000000000000000000000000000000.narinfo`)).status, 404)
  assert.equal((await fetch(`${server.url}/nar/${'0'.repeat(52)}.nar`)).status, 404)
  assert.equal((await fetch(`${server.url}/00000000000000000000000000000000.narinfo`, { method: 'PUT', body: 'x' })).status, 401)
  const response = await fetch(`${server.url}/metrics`)
  assert.equal(response.status, 200)
  const text = await response.text()
  assert.match(text, /narwhal_http_requests_total\{method="GET",route="\/nix-cache-info",status="200"\} 1/)
  assert.match(text, /narwhal_http_requests_total\{method="GET",route="\/:hash\.narinfo",status="404"\} 1/)
  assert.match(text, /narwhal_http_requests_total\{method="GET",route="\/nar\/:file",status="404"\} 1/)
  assert.match(text, /narwhal_refusals_total\{code="NARWHAL_UNAUTHORIZED"\} 1/)
  assert.doesNotMatch(text, /narwhal_refusals_total\{code="NARWHAL_NOT_FOUND"\}/)
  assert.match(text, /narwhal_process_resident_memory_bytes \d+/)
})
