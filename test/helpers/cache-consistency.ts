/**
 * Checks the promises a cache must keep whatever happened to it (a kill, a crash), by reading its
 * data folder as `narwhal fsck` does and by asking it over HTTP like a client would:
 *
 *   stored   what `narwhal fsck --verify-content` finds (store/tmp empty after a start, every
 *            recorded NAR file whole and hashing to its name, every narinfo's NAR and references
 *            held), and every unrecorded file under store/nar complete as well
 *   HTTP     every narinfo served: its URL answers 200 with exactly FileSize bytes hashing to
 *            FileHash, and every store path in References is served too (the closure is intact)
 *
 * Each check returns a list of problems rather than throwing at the first, so a failing test
 * shows everything that is wrong at once.
 */
import { createHash } from 'node:crypto'
import { createReadStream, existsSync, readdirSync } from 'node:fs'
import path from 'node:path'
import { checkCache } from '../../src/cache/fsck.js'
import { openDataDir } from '../../src/cache/open-cache.js'
import { encodeNix32 } from '../../src/nix/nix32.js'

export function tempFiles (dataDir: string): string[] {
  const dir = path.join(dataDir, 'store', 'tmp')
  return existsSync(dir) ? readdirSync(dir) : []
}

async function sha256OfFile (file: string): Promise<string> {
  const hash = createHash('sha256')
  for await (const chunk of createReadStream(file, { highWaterMark: 1 << 20 })) hash.update(chunk as Buffer)
  return encodeNix32(hash.digest())
}

export interface StoredState {
  problems: string[]
  /** Hash parts of every narinfo the database holds. */
  narinfoHashParts: Set<string>
  /** NAR files on disk, recorded or not. */
  narFiles: number
  /** Files under store/nar with no nar_files row: a kill between rename and insert (allowed). */
  filesWithoutRow: number
  /** NAR rows no narinfo points at (yet): a kill between a NAR and its narinfo (allowed). */
  narsWithoutNarinfo: number
}

/**
 * The data folder as `narwhal fsck --verify-content` judges it (cache/fsck.ts, opened next to the
 * running server as the command does), with no grace for young files: right after a start nothing
 * is in flight. A file without its row is allowed (a kill between rename and insert) as long as
 * its bytes hash to its name: it was complete before its rename.
 */
export async function checkStored (dataDir: string): Promise<StoredState> {
  const cache = await openDataDir({ dataDir })
  try {
    const report = await checkCache(cache, { verifyContent: true, graceMs: 0 })
    const problems = report.problems.filter(p => p.kind !== 'unrecorded-nar-file').map(p => `${p.kind} ${p.subject}: ${p.reason}`)
    problems.push(...report.inFlight.map(f => `${f}: in flight right after a start`))
    const unrecorded = report.problems.filter(p => p.kind === 'unrecorded-nar-file')
    for (const { subject } of unrecorded) {
      const actual = await sha256OfFile(subject)
      if (actual !== path.basename(subject)) problems.push(`${subject}: content hashes to ${actual} (a partial or wrong object under a final name)`)
    }
    const narinfoHashParts = new Set<string>()
    for (let page = await cache.metadata.narinfos.page(0, 1000); page.length > 0; page = await cache.metadata.narinfos.page(page.at(-1)?.id ?? 0, 1000)) {
      for (const row of page) narinfoHashParts.add(row.hashPart)
    }
    return {
      problems,
      narinfoHashParts,
      narFiles: report.checked.narFiles + unrecorded.length,
      filesWithoutRow: unrecorded.length,
      narsWithoutNarinfo: (await cache.metadata.narFiles.markUnnamedDeleting(Number.MAX_SAFE_INTEGER, 0, { dryRun: true })).length
    }
  } finally {
    await cache.close()
  }
}

function field (text: string, name: string): string | undefined {
  return new RegExp(`^${name}: ?(.*)$`, 'm').exec(text)?.[1]
}

/** GETs a URL and returns its status, byte count and nix32 sha256, without holding the body. */
export async function fetchHashed (url: string): Promise<{ status: number, bytes: number, fileHash: string }> {
  const response = await fetch(url)
  const hash = createHash('sha256')
  let bytes = 0
  if (response.body !== null) {
    for await (const chunk of response.body) {
      hash.update(chunk)
      bytes += chunk.length
    }
  }
  return { status: response.status, bytes, fileHash: encodeNix32(hash.digest()) }
}

export interface ServedState {
  /** Hash parts whose narinfo answered 200. */
  served: Set<string>
  problems: string[]
}

/**
 * Asks the server for each hash part's narinfo; for every one served, checks its NAR and that
 * its references are served. `mustServe` lists hash parts that must answer 200.
 */
export async function checkServed (url: string, hashParts: Iterable<string>, mustServe: Set<string>): Promise<ServedState> {
  const problems: string[] = []
  const status = new Map<string, number>()
  const texts = new Map<string, string>()
  async function narinfo (hashPart: string): Promise<number> {
    const known = status.get(hashPart)
    if (known !== undefined) return known
    const response = await fetch(`${url}/${hashPart}.narinfo`)
    const text = await response.text()
    status.set(hashPart, response.status)
    if (response.status === 200) texts.set(hashPart, text)
    return response.status
  }
  const queue = [...new Set([...hashParts, ...mustServe])]
  for (const hashPart of queue) {
    const code = await narinfo(hashPart)
    if (code !== 200) {
      if (mustServe.has(hashPart)) problems.push(`${hashPart}.narinfo: ${code}, but it must be served`)
      if (code !== 404) problems.push(`${hashPart}.narinfo: unexpected status ${code}`)
      continue
    }
    const text = texts.get(hashPart) ?? ''
    const storePath = field(text, 'StorePath') ?? ''
    if (path.basename(storePath).slice(0, 32) !== hashPart) problems.push(`${hashPart}.narinfo: StorePath ${storePath}`)
    const narUrl = field(text, 'URL')
    const fileHash = field(text, 'FileHash')?.replace(/^sha256:/, '')
    const fileSize = Number(field(text, 'FileSize'))
    if (narUrl === undefined || fileHash === undefined || !Number.isSafeInteger(fileSize)) {
      problems.push(`${hashPart}.narinfo: no URL, FileHash or FileSize:\n${text}`)
      continue
    }
    const nar = await fetchHashed(`${url}/${narUrl}`)
    if (nar.status !== 200) problems.push(`${hashPart}.narinfo: its ${narUrl} answers ${nar.status}`)
    else if (nar.bytes !== fileSize || nar.fileHash !== fileHash) {
      problems.push(`${hashPart}.narinfo: its ${narUrl} has ${nar.bytes} bytes hashing to ${nar.fileHash}; ` +
        `the narinfo says ${fileSize} bytes, ${fileHash}`)
    }
    for (const ref of (field(text, 'References') ?? '').split(' ').filter(r => r !== '')) {
      const refHash = ref.slice(0, 32)
      if (await narinfo(refHash) !== 200) problems.push(`${hashPart}.narinfo: its reference ${ref} is not served (${status.get(refHash) ?? '?'})`)
    }
  }
  return { served: new Set([...status].filter(([, code]) => code === 200).map(([h]) => h)), problems }
}
