import { test } from 'node:test'
import assert from 'node:assert/strict'
import { renderBar } from '../../src/pusher/progress.js'
import { formatBytes } from '../../src/pusher/service.js'

test('the progress bar shows paths and bytes', () => {
  assert.equal(renderBar({ pathsDone: 12, pathsTotal: 40, bytesDone: 50 * 1024 * 1024, bytesTotal: 100 * 1024 * 1024 }, 10),
    '[#####·····]   12/40 paths 50.0 MiB/100.0 MiB')
  assert.equal(renderBar({ pathsDone: 0, pathsTotal: 0, bytesDone: 0, bytesTotal: 0 }, 4), '[####]    0/0 paths 0 B/0 B')
  assert.equal(formatBytes(1536), '1.50 KiB')
})
