/**
 * The spool: how the post-build-hook hands a build to the pusher without talking to it.
 *
 * The hook writes one small file per build, `<queueDir>/spool/<name>.job`:
 *
 *   DRV_PATH=/nix/store/6091y2lwc4f6xknmiym1kaix9cxkw1y5-dep-a.drv
 *   OUT_PATHS=/nix/store/m6w0ra3ns1bjzrazws3m2m2gn9z4rlng-dep-a
 *   END
 *
 * (`OUT_PATHS` is empty on Nix 2.8; the pusher fills it from the derivation.) bin/narwhal-hook
 * (POSIX sh, builtins only) creates the file in place with O_EXCL, so the pusher takes a file
 * only once its END line is there; `narwhal hook` (writeSpoolEntry) writes a dot-named temp file,
 * fsyncs and renames it. A file still without END a minute later is set aside as bad.
 *
 * The job id is the file name plus its inode and modification time in nanoseconds: stable for
 * one file (so a crash between "insert into the queue" and "unlink the file" duplicates nothing:
 * the insert is insert-or-ignore by job id), and different for a later file that reuses a name.
 */
import { randomBytes } from 'node:crypto'
import { closeSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeSync } from 'node:fs'
import path from 'node:path'
import type { QueueEntry } from 'narwhal:pusher-queue'

export const SPOOL_SUFFIX = '.job'

/** What a complete spool file says: the queue's entry (types/pusher-queue.d.ts). */
export type SpoolEntry = QueueEntry

export function spoolDir (queueDir: string): string {
  return path.join(queueDir, 'spool')
}

export function newJobId (now = process.hrtime.bigint(), wall = Date.now()): string {
  // Wall-clock milliseconds first so names sort roughly by time; hrtime and randomness make it unique.
  return `${wall}-${now % 1_000_000_000n}-${process.pid}-${randomBytes(4).toString('hex')}`
}

export function formatSpoolEntry (drvPath: string, outPaths: string): string {
  return `DRV_PATH=${drvPath}\nOUT_PATHS=${outPaths}\nEND\n`
}

/** An entry without END this long after it was written is not being written any more. */
export const INCOMPLETE_GRACE_MS = 60_000

/** Parses a spool file; undefined when it is not one (the caller sets it aside). */
export function parseSpoolEntry (jobId: string, text: string): SpoolEntry | undefined {
  let drvPath: string | undefined
  let outPaths: string | undefined
  let complete = false
  for (const line of text.split('\n')) {
    if (line.startsWith('DRV_PATH=')) drvPath = line.slice('DRV_PATH='.length).trim()
    else if (line.startsWith('OUT_PATHS=')) outPaths = line.slice('OUT_PATHS='.length).trim()
    else if (line === 'END') complete = true
  }
  if (!complete || drvPath === undefined || outPaths === undefined) return undefined
  const outs = outPaths.split(/\s+/).filter(p => p !== '')
  if (drvPath === '' && outs.length === 0) return undefined
  if (![drvPath, ...outs].every(p => p === '' || p.startsWith('/'))) return undefined
  return { jobId, drvPath, outPaths: outs }
}

/**
 * Records one build durably: temp file, fsync, rename, fsync of the folder. Throws on failure;
 * the hook command turns that into a message and exit 0.
 */
export function writeSpoolEntry (queueDir: string, drvPath: string, outPaths: string): string {
  const dir = spoolDir(queueDir)
  const jobId = newJobId()
  const temp = path.join(dir, `.tmp-${jobId}`)
  const final = path.join(dir, jobId + SPOOL_SUFFIX)
  let fd: number
  try {
    fd = openSync(temp, 'wx', 0o644)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
    mkdirSync(dir, { recursive: true, mode: 0o755 })
    fd = openSync(temp, 'wx', 0o644)
  }
  try {
    writeSync(fd, formatSpoolEntry(drvPath, outPaths))
    fsyncSync(fd)
  } catch (err) {
    closeSync(fd)
    rmSync(temp, { force: true })
    throw err
  }
  closeSync(fd)
  renameSync(temp, final)
  syncDir(dir)
  return jobId
}

export function syncDir (dir: string): void {
  try {
    const fd = openSync(dir, 'r')
    try { fsyncSync(fd) } finally { closeSync(fd) }
  } catch {
    // Some file systems refuse fsync on a directory; the rename is still atomic.
  }
}

export interface SpoolFile { name: string, file: string }

/** Complete entries (never the dot-named temp files), oldest name first. */
export function listSpool (queueDir: string): SpoolFile[] {
  const dir = spoolDir(queueDir)
  let names: string[]
  try {
    names = readdirSync(dir)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return []
    throw err
  }
  return names.filter(n => n.endsWith(SPOOL_SUFFIX) && !n.startsWith('.')).sort()
    .map(n => ({ name: n.slice(0, -SPOOL_SUFFIX.length), file: path.join(dir, n) }))
}

export type SpoolRead =
  | { kind: 'entry', entry: SpoolEntry }
  | { kind: 'incomplete' }
  | { kind: 'bad' }

/** Reads one spool file: a complete entry, one still being written, or one that never will be. */
export function readSpoolFile (f: SpoolFile, now = Date.now()): SpoolRead {
  const st = statSync(f.file, { bigint: true })
  const jobId = `${f.name}@${st.ino}.${st.mtimeNs}`
  const entry = parseSpoolEntry(jobId, readFileSync(f.file, 'utf8'))
  if (entry !== undefined) return { kind: 'entry', entry }
  return now - Number(st.mtimeMs) < INCOMPLETE_GRACE_MS ? { kind: 'incomplete' } : { kind: 'bad' }
}
