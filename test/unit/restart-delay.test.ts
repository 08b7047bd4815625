/** The back-off with which `narwhal serve --workers N` restarts a worker that died (cli/cluster.ts). */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { restartDelay, RESTART_FIRST_MS, RESTART_MAX_MS, STABLE_MS } from '../../src/cli/cluster.js'

test('a worker that keeps dying waits 100 ms, then twice as long each time, at most 30 s', () => {
  const delays: number[] = []
  let previous: number | undefined
  for (let i = 0; i < 12; i++) {
    previous = restartDelay(previous, 1000)
    delays.push(previous)
  }
  assert.equal(RESTART_FIRST_MS, 100)
  assert.equal(RESTART_MAX_MS, 30_000)
  assert.deepEqual(delays, [100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000, 30000])
})

test('a worker that stayed up a minute starts its back-off over', () => {
  assert.equal(STABLE_MS, 60_000)
  assert.equal(restartDelay(30_000, STABLE_MS - 1), 30_000)
  assert.equal(restartDelay(30_000, STABLE_MS), 100)
  assert.equal(restartDelay(800, 3_600_000), 100)
})
