/**
 * `narwhal fsck`: does the metadata database agree with the files on disk, and can every narinfo
 * the cache serves be substituted with its whole closure?
 *
 * checkCache() only reads and returns every problem it finds, each with the fix --repair would
 * apply. repairCache() applies those fixes through the shared removal rules (remove-paths.ts), so
 * a narinfo that cannot be served goes together with every narinfo whose closure it breaks, and a
 * later upload of the same path (nix copy --to) heals the cache.
 *
 * A bucket that is itself a Nix cache (BlobStore.published) must hold exactly the rows'
 * narinfos: a narinfo object without a row is removed (Nix reading the bucket would be offered a
 * path the cache dropped), a missing or different one is written again from its row.
 *
 * It may run while the server runs (SQLite WAL lets both in). What a live server may be in the
 * middle of writing is left alone: files in store/tmp, and files in store/nar without a row
 * (Nix's upload renames a NAR into place a moment before its row is written), count as uploads
 * in flight while younger than the grace period, and so do NAR file rows not live ('pending':
 * an upload committing its file; 'deleting': a removal gc finishes). Nothing else the server does
 * is mistaken for damage: a row goes live only after its file is in place, so a live row whose
 * file is missing never belongs to an upload in progress.
 */
import { createHash } from 'node:crypto'
import type { MetadataStore, NarFileRow, StoredNarinfo } from '../db/metadata-store.js'
import { narUrl } from '../nix/nar-url.js'
import { parseNarInfo } from '../nix/narinfo.js'
import { encodeNix32 } from '../nix/nix32.js'
import { STORE_DIR } from '../nix/store-path.js'
import type { BlobStore, Leftover } from '../storage/blob-store.js'
import { measureStoredNar } from '../storage/nar-ingest.js'
import { removeNarFiles, removeNarinfos, removeUnrecordedNarFile, type Removal } from './remove-paths.js'

export type ProblemKind =
  /** A narinfo whose nar_files row is gone (the foreign key forbids it; a hand edit may not). */
  | 'narinfo-without-nar-file'
  /** A narinfo naming a reference the cache does not hold: its closure cannot be substituted. */
  | 'missing-reference'
  /** A narinfo whose stored text disagrees with its row or its NAR file's row. */
  | 'narinfo-inconsistent'
  /** A nar_files row whose file is not on disk (or is not a regular file). */
  | 'nar-file-missing'
  /** A NAR file whose size on disk differs from its row. */
  | 'nar-file-size'
  /** With --verify-content: a NAR file that no longer hashes to its name or decompresses to its NAR. */
  | 'nar-file-content'
  /** A file in store/nar with a NAR file name but no row, older than the grace period. */
  | 'unrecorded-nar-file'
  /** Anything else in store/nar: misplaced, oddly named, or not a regular file. */
  | 'stray-file'
  /** A file in store/tmp older than the grace period: an upload a crash interrupted. */
  | 'stale-temp-file'
  /** A bucket read as a Nix cache: a `<hash>.narinfo` object no narinfo row names (a crash or a gc that died between unpublish and delete). */
  | 'unrecorded-narinfo-object'
  /** A bucket read as a Nix cache: a narinfo row whose `<hash>.narinfo` object is missing (a publish that failed). */
  | 'narinfo-object-missing'
  /** A bucket read as a Nix cache: a `<hash>.narinfo` object whose text is not what its row publishes. */
  | 'narinfo-object-different'

/** What --repair does about a problem. */
export type Fix =
  /** removeNarinfos: the narinfo and every narinfo whose closure contains it. */
  | { action: 'remove-narinfo', hashPart: string }
  /** removeNarFiles: every narinfo naming the file (with referrers), then the row and the file. */
  | { action: 'remove-nar-file', narFileId: number }
  /** removeUnrecordedNarFile: the file, if still no row names it. */
  | { action: 'remove-unrecorded-nar-file', fileHash: string }
  /** Write the row's narinfo text as the bucket's `<hashPart>.narinfo` (if the row is still there). */
  | { action: 'publish-narinfo', hashPart: string }
  /** Remove the bucket's `<hashPart>.narinfo` (if still no row names it). */
  | { action: 'unpublish-narinfo', hashPart: string }
  /** Delete a file (or a directory in store/tmp) that narwhal never serves. */
  | { action: 'delete', file: string }
  /** Left for a person to look at (a directory in store/nar: fsck deletes no trees there). */
  | { action: 'none' }

export interface Problem {
  kind: ProblemKind
  /** A store path, or an absolute file path under the data folder. */
  subject: string
  reason: string
  fix: Fix
}

export interface FsckProgress { files: number, totalFiles: number, bytes: number, totalBytes: number }

export interface FsckOptions {
  /** Read every NAR file back: its sha256 and what it decompresses to. */
  verifyContent: boolean
  /** Temp files and unrecorded NAR files younger than this (ms) are taken for uploads in flight. */
  graceMs: number
  now?: number
  /** Called after each NAR file whose content was verified. */
  onProgress?: (progress: FsckProgress) => void
}

export interface FsckReport {
  problems: Problem[]
  /** `narinfoObjects`: the bucket's narinfo objects compared with the rows (undefined: the store publishes none). */
  checked: { narinfos: number, narFiles: number, narFileBytes: number, contentVerified: boolean, narinfoObjects?: number }
  /** Files left alone because an upload may still be writing them. */
  inFlight: string[]
}

export interface CacheParts {
  metadata: MetadataStore
  blobs: BlobStore
  /** References held by narinfos pulled from upstreams count as present (upstream caches configured). */
  upstreamReferences?: boolean
}

/** The default grace period: an hour, far longer than any upload's rename-to-row moment. */
export const DEFAULT_GRACE_MS = 60 * 60 * 1000

const PAGE = 1000

export async function checkCache (cache: CacheParts, options: FsckOptions): Promise<FsckReport> {
  await cache.blobs.check()
  const now = options.now ?? Date.now()
  const problems: Problem[] = []
  const narinfos = await checkNarinfos(cache.metadata, problems, cache.upstreamReferences ?? false)
  const files = await checkNarFiles(cache, options, problems)
  const inFlight: string[] = []
  await checkUnrecorded(cache, now - options.graceMs, problems, inFlight)
  await checkLeftovers(cache.blobs, now - options.graceMs, problems, inFlight)
  const narinfoObjects = await checkPublished(cache, problems)
  return {
    problems,
    checked: { narinfos, narFiles: files.count, narFileBytes: files.bytes, contentVerified: options.verifyContent, narinfoObjects },
    inFlight
  }
}

/**
 * A bucket read as a Nix cache: its `<hash>.narinfo` objects are exactly the narinfo rows' texts.
 * Rows --repair removes anyway (their objects go with them) are not compared. What looks missing
 * or unrecorded is looked at again before it is reported: an upload publishes right after its row
 * is written, and gc unpublishes right after it removes the row.
 */
async function checkPublished ({ metadata, blobs }: CacheParts, problems: Problem[]): Promise<number | undefined> {
  const published = blobs.published
  if (published === undefined) return undefined
  const objects = new Map<string, string | undefined>()
  for await (const object of published.list()) objects.set(object.hashPart, object.md5)
  const count = objects.size
  const removedHashParts = new Set<string>()
  const removedFiles = new Set<number>()
  for (const { fix } of problems) {
    if (fix.action === 'remove-narinfo') removedHashParts.add(fix.hashPart)
    if (fix.action === 'remove-nar-file') removedFiles.add(fix.narFileId)
  }
  for (let page = await metadata.narinfos.page(0, PAGE); page.length > 0; page = await metadata.narinfos.page(page[page.length - 1]?.id ?? 0, PAGE)) {
    for (const row of page) {
      const listed = objects.has(row.hashPart)
      const md5 = objects.get(row.hashPart)
      objects.delete(row.hashPart)
      if (removedHashParts.has(row.hashPart) || removedFiles.has(row.narFileId)) continue
      if (listed && md5 === createHash('md5').update(row.narinfo).digest('hex')) continue
      const text = await published.read(row.hashPart)
      if (text === row.narinfo) continue
      problems.push(text === undefined
        ? { kind: 'narinfo-object-missing', subject: row.storePath, reason: `${published.where(row.hashPart)} is missing, so Nix reading the bucket does not find this path`, fix: { action: 'publish-narinfo', hashPart: row.hashPart } }
        : { kind: 'narinfo-object-different', subject: row.storePath, reason: `${published.where(row.hashPart)} is not the narinfo the cache serves for it`, fix: { action: 'publish-narinfo', hashPart: row.hashPart } })
    }
  }
  for (const hashPart of objects.keys()) {
    if (await metadata.narinfos.has(hashPart)) continue // written since the rows were read
    const text = await published.read(hashPart)
    if (text === undefined) continue // removed since the listing
    const storePath = /^StorePath: (.*)$/m.exec(text)?.[1]
    problems.push({
      kind: 'unrecorded-narinfo-object',
      subject: published.where(hashPart),
      reason: `no narinfo row${storePath === undefined ? '' : ` for ${storePath}`}: Nix reading the bucket is offered a path the cache no longer holds (left by a crash between a removal's steps?)`,
      fix: { action: 'unpublish-narinfo', hashPart }
    })
  }
  return count
}

/** The narinfo rows: each names an existing NAR file, agrees with it, and has its references. */
async function checkNarinfos (metadata: MetadataStore, problems: Problem[], upstreamReferences: boolean): Promise<number> {
  for (const n of await metadata.narinfos.withoutLiveNarFile()) {
    problems.push({
      kind: 'narinfo-without-nar-file',
      subject: n.storePath,
      reason: `its NAR file (nar_files row ${n.narFileId}) is not recorded as live`,
      fix: { action: 'remove-narinfo', hashPart: n.hashPart }
    })
  }
  for (const r of await metadata.narinfos.missingReferences()) {
    if (upstreamReferences && await metadata.upstreamRecords.holds(r.refBaseName.slice(0, 32), `${STORE_DIR}/${r.refBaseName}`)) continue
    problems.push({
      kind: 'missing-reference',
      subject: r.storePath,
      reason: `references ${STORE_DIR}/${r.refBaseName}, which the cache does not hold, so its closure cannot be substituted`,
      fix: { action: 'remove-narinfo', hashPart: r.hashPart }
    })
  }
  let count = 0
  for (let page = await metadata.narinfos.page(0, PAGE); page.length > 0; page = await metadata.narinfos.page(page[page.length - 1]?.id ?? 0, PAGE)) {
    for (const row of page) {
      count++
      const nar = await metadata.narFiles.getById(row.narFileId)
      if (nar?.state !== 'live') continue // reported above
      const disagreements = narinfoDisagreements(row, nar)
      if (disagreements.length > 0) {
        problems.push({
          kind: 'narinfo-inconsistent',
          subject: row.storePath,
          reason: disagreements.join('; '),
          fix: { action: 'remove-narinfo', hashPart: row.hashPart }
        })
      }
    }
  }
  return count
}

/** Where the stored narinfo text, its row and its NAR file's row disagree (acceptNarinfo made them agree). */
export function narinfoDisagreements (row: Omit<StoredNarinfo, 'sigs'>, nar: NarFileRow): string[] {
  let text
  try {
    text = parseNarInfo(row.narinfo)
  } catch (err) {
    return [`its stored text does not parse: ${(err as Error).message}`]
  }
  const out: string[] = []
  const url = narUrl(nar.fileHash, nar.compression)
  if (text.storePath !== row.storePath) out.push(`its text says StorePath ${text.storePath}`)
  if (row.storePath.slice(STORE_DIR.length + 1, STORE_DIR.length + 33) !== row.hashPart) out.push(`it is stored under hash part ${row.hashPart}`)
  if (text.url !== url) out.push(`its text says URL ${text.url}, its NAR file is ${url}`)
  if (text.compression !== nar.compression) out.push(`its text says Compression ${text.compression}, its NAR file is ${nar.compression}`)
  if (text.fileHash !== undefined && encodeNix32(text.fileHash) !== nar.fileHash) out.push(`its text says FileHash sha256:${encodeNix32(text.fileHash)}`)
  if (text.fileSize !== undefined && text.fileSize !== BigInt(nar.fileSize)) out.push(`its text says FileSize ${text.fileSize}, its NAR file has ${nar.fileSize} bytes`)
  if (encodeNix32(text.narHash) !== nar.narHash || row.narHash !== nar.narHash) {
    out.push(`NarHash: text sha256:${encodeNix32(text.narHash)}, row sha256:${row.narHash}, NAR file sha256:${nar.narHash}`)
  }
  if (text.narSize !== BigInt(nar.narSize) || row.narSize !== nar.narSize) {
    out.push(`NarSize: text ${text.narSize}, row ${row.narSize}, NAR file ${nar.narSize}`)
  }
  const textRefs = [...new Set(text.references)].sort().join(' ')
  const rowRefs = [...row.references].sort().join(' ')
  if (textRefs !== rowRefs) out.push(`its text says References ${textRefs === '' ? '(none)' : textRefs}, its rows ${rowRefs === '' ? '(none)' : rowRefs}`)
  return out
}

async function namedBy (metadata: MetadataStore, narFileId: number): Promise<string> {
  const names = (await metadata.narinfos.naming([narFileId])).map(n => n.storePath)
  return names.length === 0 ? 'named by no narinfo' : `named by ${names.join(', ')}`
}

/** The nar_files rows: each file is on disk with its recorded size (and, verified, its content). */
async function checkNarFiles (cache: CacheParts, options: FsckOptions, problems: Problem[]): Promise<{ count: number, bytes: number }> {
  const { metadata, blobs } = cache
  const totals = await metadata.narFiles.totals()
  const progress: FsckProgress = { files: 0, totalFiles: totals.files, bytes: 0, totalBytes: totals.bytes }
  let count = 0
  let bytes = 0
  for (let page = await metadata.narFiles.page(0, PAGE); page.length > 0; page = await metadata.narFiles.page(page[page.length - 1]?.id ?? 0, PAGE)) {
    for (const row of page) {
      // A pending file is an upload in flight; a deleting one, a removal gc finishes.
      if (row.state !== 'live') continue
      count++
      const problem = async (kind: ProblemKind, reason: string): Promise<void> => {
        problems.push({ kind, subject: blobs.where(row), reason: `${reason} (${await namedBy(metadata, row.id)})`, fix: { action: 'remove-nar-file', narFileId: row.id } })
      }
      const size = await blobs.size(row)
      if (size === undefined) { await problem('nar-file-missing', 'the file is missing'); continue }
      bytes += size
      if (size !== row.fileSize) { await problem('nar-file-size', `the file has ${size} bytes, ${row.fileSize} recorded`); continue }
      if (!options.verifyContent) continue
      const wrong = await contentDisagreements(blobs, row)
      if (wrong.length > 0) await problem('nar-file-content', wrong.join('; '))
      progress.files++
      progress.bytes += row.fileSize
      options.onProgress?.({ ...progress })
    }
  }
  return { count, bytes }
}

/** Reads a NAR file back, as an upload was read; what disagrees with its row. */
async function contentDisagreements (blobs: BlobStore, row: NarFileRow): Promise<string[]> {
  const read = await blobs.open(row)
  if (read === undefined) return ['it went missing while fsck ran']
  if (read.kind !== 'body') throw new Error(`the blob store answered ${read.kind} for a read of ${blobs.where(row)}`)
  let measured
  try {
    measured = await measureStoredNar(read.chunks())
  } catch (err) {
    // A file fsck cannot read (permissions, I/O errors) is not proof of damage: stop rather
    // than let --repair remove what may be fine.
    if ((err as NodeJS.ErrnoException).syscall !== undefined) throw err
    return [`it does not read back as a NAR: ${(err as Error).message}`]
  }
  const out: string[] = []
  if (measured.fileHash !== row.fileHash) out.push(`its bytes hash to sha256:${measured.fileHash}, not to its name`)
  if (measured.compression !== row.compression) out.push(`it is ${measured.compression} data, recorded as ${row.compression}`)
  if (measured.narHash !== row.narHash) out.push(`it decompresses to a NAR with sha256:${measured.narHash}, recorded sha256:${row.narHash}`)
  if (measured.narSize !== row.narSize) out.push(`it decompresses to ${measured.narSize} bytes, ${row.narSize} recorded`)
  return out
}

/** Objects no row names: uploads in flight while young, else left by a crash (or by hand). */
async function checkUnrecorded (cache: CacheParts, youngSince: number, problems: Problem[], inFlight: string[]): Promise<void> {
  for await (const blob of cache.blobs.list()) {
    if (await cache.metadata.narFiles.get(blob.fileHash) !== undefined) continue // recorded: checked with its row
    const subject = cache.blobs.where(blob)
    if (blob.modifiedAt >= youngSince) {
      inFlight.push(subject)
      continue
    }
    problems.push({
      kind: 'unrecorded-nar-file',
      subject,
      reason: 'no nar_files row names this file, so it is never served (a crash between its commit and its row?)',
      fix: { action: 'remove-unrecorded-nar-file', fileHash: blob.fileHash }
    })
  }
}

/** What the store holds besides objects: stray files, and uploads in flight or left by a crash. */
async function checkLeftovers (blobs: BlobStore, youngSince: number, problems: Problem[], inFlight: string[]): Promise<void> {
  const kinds: Record<Exclude<Leftover['kind'], 'in-flight'>, ProblemKind> = { stray: 'stray-file', 'stale-temp': 'stale-temp-file' }
  for await (const leftover of blobs.leftovers(youngSince)) {
    if (leftover.kind === 'in-flight') {
      inFlight.push(leftover.subject)
      continue
    }
    problems.push({
      kind: kinds[leftover.kind],
      subject: leftover.subject,
      reason: leftover.reason,
      fix: leftover.removable ? { action: 'delete', file: leftover.subject } : { action: 'none' }
    })
  }
}

export interface RepairResult {
  /** Narinfos and NAR files removed by the shared removal rules. */
  removal: Removal
  /** Unrecorded NAR files, stray files, stale temp files and unrecorded narinfo objects deleted. */
  deletedFiles: string[]
  /** Store paths whose narinfo objects were written again from their rows (a bucket read as a Nix cache). */
  republished: string[]
  /** Problems --repair leaves for a person. */
  unrepaired: Problem[]
  dryRun: boolean
}

/**
 * Applies the fixes of `problems`. With dryRun, reports what a real run would remove and changes
 * nothing.
 */
export async function repairCache (cache: CacheParts, problems: Problem[], options: { dryRun?: boolean } = {}): Promise<RepairResult> {
  const dryRun = options.dryRun ?? false
  const hashParts: string[] = []
  const narFileIds: number[] = []
  const deletedFiles: string[] = []
  const republished: string[] = []
  const unrepaired: Problem[] = []
  for (const { fix } of problems) {
    if (fix.action === 'remove-narinfo') hashParts.push(fix.hashPart)
    if (fix.action === 'remove-nar-file') narFileIds.push(fix.narFileId)
  }
  // Files first, then narinfos: a dry run's transactions roll back, so each must plan on its own.
  const byFile = await removeNarFiles(cache, narFileIds, { dryRun })
  const byNarinfo = await removeNarinfos(cache, hashParts, { dryRun })
  for (const problem of problems) {
    const { fix } = problem
    if (fix.action === 'remove-unrecorded-nar-file') {
      // False when an upload recorded the file meanwhile: then it is no longer a problem.
      if (await removeUnrecordedNarFile(cache, fix.fileHash, { dryRun })) deletedFiles.push(problem.subject)
    } else if (fix.action === 'unpublish-narinfo') {
      // Looked at again: an upload may have recorded the path meanwhile.
      if (await cache.metadata.narinfos.has(fix.hashPart)) continue
      if (!dryRun) await cache.blobs.unpublishNarinfo(fix.hashPart)
      deletedFiles.push(problem.subject)
    } else if (fix.action === 'publish-narinfo') {
      // The row as it is now (removed by the fixes above or by a gc meanwhile: nothing to publish).
      const row = await cache.metadata.narinfos.get(fix.hashPart)
      if (row === undefined) continue
      if (!dryRun) await cache.blobs.publishNarinfo(fix.hashPart, row.narinfo)
      republished.push(row.storePath)
    } else if (fix.action === 'delete') {
      if (!dryRun) await cache.blobs.removeLeftover(fix.file)
      deletedFiles.push(fix.file)
    } else if (fix.action === 'none') {
      unrepaired.push(problem)
    }
  }
  return { removal: mergeRemovals(byFile, byNarinfo), deletedFiles, republished, unrepaired, dryRun }
}

/** Two removals as one; a dry run's two plans may overlap. */
function mergeRemovals (a: Removal, b: Removal): Removal {
  const storePaths = [...new Set([...a.storePaths, ...b.storePaths])].sort()
  const narFiles = [...new Map([...a.narFiles, ...b.narFiles].map(f => [f.id, f])).values()].sort((x, y) => x.id - y.id)
  return { storePaths, narFiles, bytes: narFiles.reduce((sum, f) => sum + f.fileSize, 0) }
}
