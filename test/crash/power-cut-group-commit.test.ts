/**
 * Group commit keeps the promise of a power cut: narinfos inserted at once each resolve only when
 * their row is on the disk, though they share syncs of SQLite's write-ahead log.
 *
 * The power cut is simulated: the store's log sync copies the database and its log as they are
 * when the sync begins (what that fsync makes durable) and, once the sync has finished, that copy
 * becomes "what the disk holds". Every write not covered by a finished sync is lost with the
 * power. When an insert resolves, the disk as it is at that moment is opened as SQLite would find
 * it after a reboot (recovering from the log), and must hold the narinfo, its NAR file live.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { closeSync, fsyncSync, mkdtempSync, openSync, readFileSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import Database from 'better-sqlite3'
import { migrate, openDatabase } from '../../src/db/database.js'
import type { NarFileRow } from '../../src/db/metadata-store.js'
import { SqliteMetadataStore } from '../../src/db/sqlite/store.js'
import { PROVENANCE, liveNarFile, narinfoRecord, testPath } from '../helpers/metadata-store-contract.js'

interface Disk { db: Buffer, log: Buffer }

const UPLOADS = 24

/** A store on a real file whose log syncs record what each one made durable. */
function storeWithSimulatedDisk () {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'narwhal-power-cut-'))
  const file = path.join(dir, 'narwhal.db')
  const db = openDatabase(file)
  migrate(db)
  const read = (): Disk => ({ db: readFileSync(file), log: readFileSync(`${file}-wal`) })
  // The migrations committed with synchronous = FULL: on the disk from the start.
  const state = { disk: read(), syncs: 0 }
  const syncLog = async (logFile: string): Promise<void> => {
    state.syncs++
    const covered = read()
    const fd = openSync(logFile, 'r')
    try { fsyncSync(fd) } finally { closeSync(fd) }
    // A sync takes a while: uploads that finish meanwhile queue behind it.
    await new Promise(resolve => setTimeout(resolve, 20))
    state.disk = covered
  }
  return { store: new SqliteMetadataStore(db, undefined, syncLog), state }
}

/** The database SQLite finds after a reboot with `disk` on it. */
function afterPowerCut (disk: Disk): Database.Database {
  const file = path.join(mkdtempSync(path.join(os.tmpdir(), 'narwhal-rebooted-')), 'narwhal.db')
  writeFileSync(file, disk.db)
  writeFileSync(`${file}-wal`, disk.log)
  return new Database(file)
}

test('narinfos inserted at once are each on the disk when answered, with fewer log syncs than uploads', async () => {
  const { store, state } = storeWithSimulatedDisk()
  try {
    const paths = Array.from({ length: UPLOADS }, (_, i) => testPath(`concurrent-${i}`))
    // Their NAR files, as the NAR uploads before them left them (live, not yet synced).
    const files: NarFileRow[] = []
    for (let i = 0; i < UPLOADS; i++) files.push(await liveNarFile(store))
    const syncsBefore = state.syncs
    const answered: Array<{ hashPart: string, fileHash: string, disk: Disk }> = []
    await Promise.all(paths.map(async (p, i) => {
      const file = files[i]
      assert.ok(file !== undefined)
      const outcome = await store.narinfos.insert(narinfoRecord(p, file), PROVENANCE, { upstreamReferences: false, now: 2000 })
      assert.deepEqual(outcome, { kind: 'created' })
      // The power fails the moment this upload is answered.
      answered.push({ hashPart: p.hashPart, fileHash: file.fileHash, disk: state.disk })
    }))
    assert.equal(answered.length, UPLOADS)
    for (const a of answered) {
      const rebooted = afterPowerCut(a.disk)
      try {
        const row = rebooted.prepare(`SELECT n.store_path AS storePath, f.state FROM narinfos n JOIN nar_files f ON f.id = n.nar_file_id
          WHERE n.hash_part = ?`).get(a.hashPart) as { storePath: string, state: string } | undefined
        assert.ok(row !== undefined, `narinfo ${a.hashPart} was answered but a power cut at that moment loses it`)
        assert.equal(row.state, 'live', `the NAR file of ${a.hashPart} is not live after the power cut`)
      } finally {
        rebooted.close()
      }
    }
    const syncs = state.syncs - syncsBefore
    assert.ok(syncs <= 3, `${UPLOADS} narinfos inserted at once took ${syncs} log syncs; they should share them`)
  } finally {
    await store.close()
  }
})

test('an identical narinfo read while the first one is not yet on the disk decides nothing before it is', async () => {
  const { store, state } = storeWithSimulatedDisk()
  try {
    const p = testPath('read-while-syncing')
    const file = await liveNarFile(store)
    const inserting = store.narinfos.insert(narinfoRecord(p, file), PROVENANCE, { upstreamReferences: false, now: 2000 })
    // A second upload of the same narinfo reads it to answer 'unchanged'.
    const found = await store.narinfos.get(p.hashPart)
    assert.equal(found?.storePath, p.storePath)
    const rebooted = afterPowerCut(state.disk)
    try {
      assert.ok(rebooted.prepare('SELECT 1 FROM narinfos WHERE hash_part = ?').get(p.hashPart) !== undefined,
        'the narinfo that decided the second answer is lost by a power cut at that moment')
    } finally {
      rebooted.close()
    }
    await inserting
  } finally {
    await store.close()
  }
})

test('narinfos committed without waiting (an upload batch\'s parts) are all on the disk once flush resolves, with one log sync', async () => {
  const { store, state } = storeWithSimulatedDisk()
  try {
    const paths = Array.from({ length: UPLOADS }, (_, i) => testPath(`batch-part-${i}`))
    const syncsBefore = state.syncs
    for (const p of paths) {
      const file = await liveNarFile(store)
      const outcome = await store.narinfos.insert(narinfoRecord(p, file), PROVENANCE, { upstreamReferences: false, now: 2000, durableWithNext: true })
      assert.deepEqual(outcome, { kind: 'created' })
    }
    assert.equal(state.syncs, syncsBefore, 'the parts did not wait for the disk one by one')
    await store.flush()
    // The power fails the moment the batch is answered.
    const rebooted = afterPowerCut(state.disk)
    try {
      for (const p of paths) {
        assert.ok(rebooted.prepare('SELECT 1 FROM narinfos WHERE hash_part = ?').get(p.hashPart) !== undefined,
          `narinfo ${p.hashPart} was flushed but a power cut at that moment loses it`)
      }
    } finally {
      rebooted.close()
    }
    assert.equal(state.syncs - syncsBefore, 1)
  } finally {
    await store.close()
  }
})
