/**
 * Group commit (nix/group-sync.ts): a caller is answered only by a sync that began after it
 * asked, callers that ask while a sync runs share the next one, and a failed sync fails its
 * callers without stopping the next.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { GroupSync } from '../../src/nix/group-sync.js'

/** A sync function whose syncs end when the test says, and a log of what happened in what order. */
function controlledSyncs () {
  const log: string[] = []
  const running: Array<{ file: string, end: (err?: Error) => void }> = []
  const group = new GroupSync(async (file) => {
    log.push(`begin ${file}`)
    await new Promise<void>((resolve, reject) => running.push({ file, end: err => { err === undefined ? resolve() : reject(err) } }))
    log.push(`end ${file}`)
  })
  const endOldest = async (err?: Error): Promise<void> => {
    const sync = running.shift()
    if (sync === undefined) throw new Error('no sync is running')
    sync.end(err)
    // Let the callers' and the next round's continuations run.
    for (let i = 0; i < 10; i++) await new Promise(resolve => setImmediate(resolve))
  }
  return { group, log, running, endOldest }
}

test('a caller that asks while a sync runs waits for the next sync, which all such callers share', async () => {
  const { group, log, running, endOldest } = controlledSyncs()
  const answered: string[] = []
  const ask = (who: string): Promise<void> => group.sync('wal').then(() => { answered.push(`${who} after ${log.filter(l => l.startsWith('end')).length} syncs`) })
  const first = ask('first')
  await new Promise(resolve => setImmediate(resolve))
  // These wrote after the first sync began: it may not cover their writes.
  const later = [ask('second'), ask('third'), ask('fourth')]
  assert.equal(running.length, 1)
  await endOldest()
  assert.deepEqual(answered, ['first after 1 syncs'])
  assert.equal(running.length, 1, 'the callers who asked meanwhile share one more sync')
  await endOldest()
  await Promise.all([first, ...later])
  assert.deepEqual(answered, ['first after 1 syncs', 'second after 2 syncs', 'third after 2 syncs', 'fourth after 2 syncs'])
  assert.deepEqual(log, ['begin wal', 'end wal', 'begin wal', 'end wal'])
  // Nothing runs once everyone is answered; the next caller starts a sync at once.
  const again = ask('fifth')
  await new Promise(resolve => setImmediate(resolve))
  assert.equal(running.length, 1)
  await endOldest()
  await again
})

test('different files are synced at once, each on its own', async () => {
  const { group, running, endOldest } = controlledSyncs()
  const a = group.sync('a')
  const b = group.sync('b')
  await new Promise(resolve => setImmediate(resolve))
  assert.deepEqual(running.map(r => r.file), ['a', 'b'])
  await endOldest()
  await endOldest()
  await Promise.all([a, b])
})

test('a failed sync fails the callers it answers, and the callers queued behind it get a sync of their own', async () => {
  const { group, running, endOldest } = controlledSyncs()
  const first = group.sync('wal')
  await new Promise(resolve => setImmediate(resolve))
  const second = group.sync('wal')
  const firstFailed = assert.rejects(first, /EIO/)
  await endOldest(new Error('EIO: the disk failed'))
  await firstFailed
  assert.equal(running.length, 1)
  await endOldest()
  await second
})
