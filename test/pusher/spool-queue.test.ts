import { test } from 'node:test'
import assert from 'node:assert/strict'
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, utimesSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { openQueue } from '../../src/cli/open-queue.js'
import { ingestSpool } from '../../src/pusher/queue.js'
import { listSpool, parseSpoolEntry, readSpoolFile, spoolDir, writeSpoolEntry } from '../../src/pusher/spool.js'
import { run, tempDir } from '../helpers/nix.js'
import { CLI, HOOK_SH } from './hook-helpers.js'

const DRV = '/nix/store/6091y2lwc4f6xknmiym1kaix9cxkw1y5-dep-a.drv'
const OUT = '/nix/store/m6w0ra3ns1bjzrazws3m2m2gn9z4rlng-dep-a'

function hookEnv (queueDir: string, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return { PATH: process.env.PATH, NARWHAL_QUEUE_DIR: queueDir, DRV_PATH: DRV, OUT_PATHS: '', ...extra }
}

for (const [name, file, args] of [['bin/narwhal-hook (sh)', HOOK_SH, []], ['narwhal hook (node)', 'node', [CLI, 'hook']]] as const) {
  test(`${name} records DRV_PATH and an empty OUT_PATHS and exits 0`, async () => {
    const queueDir = path.join(tempDir(), 'queue')
    const result = await run(file, [...args], { env: hookEnv(queueDir) })
    assert.equal(result.code, 0, result.stderr)
    assert.equal(result.stderr, '')
    const files = listSpool(queueDir)
    assert.equal(files.length, 1)
    const read = readSpoolFile(files[0]!)
    assert.equal(read.kind, 'entry')
    if (read.kind === 'entry') {
      assert.equal(read.entry.drvPath, DRV)
      assert.deepEqual(read.entry.outPaths, [])
    }
  })

  test(`${name} exits 0 and says so on stderr when it cannot record`, async () => {
    const blocked = path.join(tempDir(), 'file')
    writeFileSync(blocked, 'not a folder')
    const result = await run(file, [...args], { env: hookEnv(blocked, { OUT_PATHS: OUT }) })
    assert.equal(result.code, 0)
    assert.match(result.stderr, /could not record the build of .*dep-a\.drv/)
  })
}

test('bin/narwhal-hook never overwrites an entry and gives each build its own file', async () => {
  const queueDir = tempDir()
  for (let i = 0; i < 5; i++) {
    const r = await run(HOOK_SH, [], { env: hookEnv(queueDir, { OUT_PATHS: `${OUT}${i}` }) })
    assert.equal(r.code, 0)
  }
  const entries = listSpool(queueDir).map(f => readSpoolFile(f))
  assert.equal(entries.length, 5)
  assert.deepEqual(entries.map(e => e.kind === 'entry' ? e.entry.outPaths[0] : '').sort(), [0, 1, 2, 3, 4].map(i => `${OUT}${i}`))
})

test('the spool format: END marks a complete entry', () => {
  assert.deepEqual(parseSpoolEntry('j', `DRV_PATH=${DRV}\nOUT_PATHS=${OUT} ${OUT}2\nEND\n`), { jobId: 'j', drvPath: DRV, outPaths: [OUT, `${OUT}2`] })
  assert.equal(parseSpoolEntry('j', `DRV_PATH=${DRV}\nOUT_PATHS=\n`), undefined, 'no END yet')
  assert.equal(parseSpoolEntry('j', 'DRV_PATH=\nOUT_PATHS=\nEND\n'), undefined, 'nothing to push')
  assert.equal(parseSpoolEntry('j', 'DRV_PATH=relative\nOUT_PATHS=\nEND\n'), undefined)
})

test('ingest moves entries into the queue once, even after a crash between insert and unlink', () => {
  const queueDir = tempDir()
  writeSpoolEntry(queueDir, DRV, '')
  writeSpoolEntry(queueDir, '', OUT)
  const queue = openQueue(queueDir)
  try {
    // The crash: rows committed, files not yet removed. Simulate by enqueueing without unlinking.
    for (const f of listSpool(queueDir)) {
      const read = readSpoolFile(f)
      if (read.kind === 'entry') queue.enqueue(read.entry)
    }
    assert.equal(ingestSpool(queue, queueDir), 2)
    assert.deepEqual(listSpool(queueDir), [])
    const s = queue.status()
    assert.equal(s.counts.pending, 2, 'no duplicates')
    // A later file under a reused name is a new job.
    const name = path.join(spoolDir(queueDir), 'reused.job')
    writeFileSync(name, `DRV_PATH=${DRV}\nOUT_PATHS=\nEND\n`)
    ingestSpool(queue, queueDir)
    writeFileSync(name, `DRV_PATH=${DRV}\nOUT_PATHS=\nEND\n`)
    utimesSync(name, new Date(), new Date(Date.now() + 5000))
    ingestSpool(queue, queueDir)
    assert.equal(queue.status().counts.pending, 4)
  } finally {
    queue.close()
  }
})

test('an entry still being written waits; one abandoned for a minute is set aside', () => {
  const queueDir = tempDir()
  const queue = openQueue(queueDir)
  try {
    const partial = path.join(spoolDir(queueDir), 'partial.job')
    writeFileSync(partial, `DRV_PATH=${DRV}\n`)
    assert.equal(ingestSpool(queue, queueDir), 0)
    assert.ok(existsSync(partial), 'left for the writer to finish')
    const old = new Date(Date.now() - 120_000)
    utimesSync(partial, old, old)
    const lines: string[] = []
    assert.equal(ingestSpool(queue, queueDir, l => lines.push(l)), 0)
    assert.ok(!existsSync(partial))
    assert.deepEqual(readdirSync(path.join(spoolDir(queueDir), 'bad')), ['partial.job'])
    // A dead `narwhal hook`'s temp file goes too, once it is old.
    const temp = path.join(spoolDir(queueDir), '.tmp-123')
    writeFileSync(temp, 'DRV_PATH=')
    utimesSync(temp, old, old)
    ingestSpool(queue, queueDir)
    assert.ok(!existsSync(temp))
    assert.match(lines.join('\n'), /partial\.job is not a build record/)
  } finally {
    queue.close()
  }
})

test('queue states: claim, retry with backoff, finish; a restart puts in-flight jobs back', () => {
  const queueDir = tempDir()
  let queue = openQueue(queueDir)
  const a = queue.enqueue({ jobId: 'a', drvPath: DRV, outPaths: [] }, 1000)
  queue.enqueue({ jobId: 'b', drvPath: '', outPaths: [OUT] }, 1000)
  const claimed = queue.claimNext(2000)
  assert.equal(claimed?.seq, a.seq)
  assert.equal(claimed?.state, 'running')
  queue.retryLater(a.seq, 5000, 'HTTP 503', 2000)
  const b = queue.claimNext(2000)
  assert.equal(b?.jobId, 'b', 'a job in backoff lets the next one go')
  assert.equal(queue.claimNext(2000), undefined)
  assert.equal(queue.earliestPendingAt(), 7000)
  assert.equal(queue.claimNext(7000)?.attempts, 1)
  // kill -9 here: both are "running". A new pusher opens the queue.
  queue.close()
  queue = openQueue(queueDir)
  try {
    assert.equal(queue.recoverRunning(), 2)
    const again = queue.claimNext(Date.now())!
    queue.finish(again.seq, { state: 'failed', lastError: `${OUT}: HTTP 403: NARWHAL_SIGNATURE_REJECTED`, pathsTotal: 1, pathsUploaded: 0, bytesUploaded: 0 })
    queue.setPathOutcome(OUT, 'failed', 'HTTP 403: NARWHAL_SIGNATURE_REJECTED', again.seq)
    const s = queue.status()
    assert.equal(s.counts.failed, 1)
    assert.equal(s.counts.pending, 1)
    assert.match(s.failed[0]?.lastError ?? '', /NARWHAL_SIGNATURE_REJECTED/)
    assert.equal(s.paths[0]?.storePath, OUT)
  } finally {
    queue.close()
  }
})

test('narwhal queue status and wait read the queue folder', async () => {
  const queueDir = tempDir()
  const env = { ...process.env, NARWHAL_QUEUE_DIR: queueDir }
  const empty = await run('node', [CLI, 'queue', 'status'], { env })
  assert.equal(empty.code, 0)
  assert.equal((await run('node', [CLI, 'queue', 'wait', '--timeout', '5'], { env })).code, 0, 'nothing to wait for')
  writeSpoolEntry(queueDir, DRV, '')
  const timedOut = await run('node', [CLI, 'queue', 'wait', '--timeout', '0.5'], { env })
  assert.equal(timedOut.code, 124)
  assert.match(timedOut.stderr, /timed out with work left:\nspooled 1/)
  const queue = openQueue(queueDir)
  ingestSpool(queue, queueDir)
  const job = queue.claimNext()!
  queue.finish(job.seq, { state: 'failed', lastError: 'HTTP 400: NARWHAL_NARINFO_INVALID: bad', pathsTotal: 1, pathsUploaded: 0, bytesUploaded: 0 })
  queue.close()
  const status = await run('node', [CLI, 'queue', 'status'], { env })
  assert.match(status.stdout, /failed 1/)
  assert.match(status.stdout, /NARWHAL_NARINFO_INVALID: bad/)
  // That failure happened before this wait began, so this wait is about nothing: 0.
  assert.equal((await run('node', [CLI, 'queue', 'wait', '--timeout', '5'], { env })).code, 0)
})

test('the hook can write into a queue folder it did not create (0755 root folder, hook as root)', () => {
  // The daemon runs the hook as root; the queue folder is created by the pusher. Mode 0755 is
  // enough for root; this documents that the spool folder is the only thing the hook needs.
  const queueDir = tempDir()
  mkdirSync(spoolDir(queueDir), { recursive: true })
  chmodSync(spoolDir(queueDir), 0o755)
  writeSpoolEntry(queueDir, DRV, '')
  assert.match(readFileSync(listSpool(queueDir)[0]!.file, 'utf8'), /END\n$/)
})
