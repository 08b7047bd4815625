/**
 * Checks the promises a cache must keep whatever happened to it (a kill, a crash), by reading its
 * data folder directly and by asking it over HTTP like a client would:
 *
 *   disk     store/tmp is empty (after a start); every file under store/nar/<h0h1>/ is complete:
 *            its bytes hash (nix32 sha256) to its name, in the shard its name says
 *   database (opened read-only, next to the running server) every nar_files row has its file with
 *            the recorded size; every narinfo's NAR row exists; every reference has a narinfo
 *   HTTP     every narinfo served: its URL answers 200 with exactly FileSize bytes hashing to
 *            FileHash, and every store path in References is served too (the closure is intact)
 *
 * Each check returns a list of problems rather than throwing at the first, so a failing test
 * shows everything that is wrong at once.
 */
import { createHash } from 'node:crypto'
import { createReadStream, existsSync, readdirSync, statSync } from 'node:fs'
import path from 'node:path'
import Database from 'better-sqlite3'
import { encodeNix32 } from '../../src/nix/nix32.js'

export interface DiskState {
  /** Names in store/tmp. */
  tempFiles: string[]
  /** File hash → size of every file under store/nar. */
  narFiles: Map<string, number>
  problems: string[]
}

async function sha256OfFile (file: string): Promise<string> {
  const hash = createHash('sha256')
  for await (const chunk of createReadStream(file, { highWaterMark: 1 << 20 })) hash.update(chunk as Buffer)
  return encodeNix32(hash.digest())
}

export function tempFiles (dataDir: string): string[] {
  const dir = path.join(dataDir, 'store', 'tmp')
  return existsSync(dir) ? readdirSync(dir) : []
}

/** Reads every file under store/nar and checks that its content is what its name says. */
export async function checkDisk (dataDir: string): Promise<DiskState> {
  const narDir = path.join(dataDir, 'store', 'nar')
  const problems: string[] = []
  const narFiles = new Map<string, number>()
  for (const shard of existsSync(narDir) ? readdirSync(narDir, { withFileTypes: true }) : []) {
    if (!shard.isDirectory() || !/^[0-9a-z]{2}$/.test(shard.name)) {
      problems.push(`store/nar/${shard.name}: not a shard folder`)
      continue
    }
    for (const entry of readdirSync(path.join(narDir, shard.name), { withFileTypes: true })) {
      const where = `store/nar/${shard.name}/${entry.name}`
      if (!entry.isFile()) { problems.push(`${where}: not a regular file`); continue }
      if (!/^[0-9a-z]{52}$/.test(entry.name) || entry.name.slice(0, 2) !== shard.name) {
        problems.push(`${where}: not named <nix32 sha256> in its shard`)
        continue
      }
      const file = path.join(narDir, shard.name, entry.name)
      const actual = await sha256OfFile(file)
      if (actual !== entry.name) problems.push(`${where}: content hashes to ${actual} (a partial or wrong object under a final name)`)
      narFiles.set(entry.name, statSync(file).size)
    }
  }
  return { tempFiles: tempFiles(dataDir), narFiles, problems }
}

export interface DatabaseState {
  narFileHashes: Set<string>
  narinfoHashParts: Set<string>
  /** NAR rows no narinfo points at (yet). */
  narFilesWithoutNarinfo: number
  problems: string[]
}

/** Reads the metadata read-only and checks it against the files found by checkDisk. */
export function checkDatabase (dataDir: string, disk: DiskState): DatabaseState {
  const db = new Database(path.join(dataDir, 'narwhal.sqlite'), { readonly: true, fileMustExist: true })
  try {
    const problems: string[] = []
    const narRows = db.prepare('SELECT id, file_hash AS fileHash, file_size AS fileSize FROM nar_files').all() as
      Array<{ id: number, fileHash: string, fileSize: number }>
    for (const row of narRows) {
      const size = disk.narFiles.get(row.fileHash)
      if (size === undefined) problems.push(`nar_files row ${row.fileHash}: no file on disk`)
      else if (size !== row.fileSize) problems.push(`nar_files row ${row.fileHash}: ${row.fileSize} bytes recorded, ${size} on disk`)
    }
    const narIds = new Set(narRows.map(r => r.id))
    const narinfos = db.prepare('SELECT id, hash_part AS hashPart, nar_file_id AS narFileId FROM narinfos').all() as
      Array<{ id: number, hashPart: string, narFileId: number }>
    const hashParts = new Set(narinfos.map(n => n.hashPart))
    for (const n of narinfos) {
      if (!narIds.has(n.narFileId)) problems.push(`narinfo ${n.hashPart}: its nar_files row ${n.narFileId} is missing`)
    }
    const refs = db.prepare(`SELECT n.hash_part AS hashPart, r.ref_hash_part AS refHashPart
                             FROM narinfo_refs r JOIN narinfos n ON n.id = r.narinfo_id`).all() as
      Array<{ hashPart: string, refHashPart: string }>
    for (const r of refs) {
      if (!hashParts.has(r.refHashPart)) problems.push(`narinfo ${r.hashPart}: its reference ${r.refHashPart} has no narinfo`)
    }
    const pointedAt = new Set(narinfos.map(n => n.narFileId))
    return {
      narFileHashes: new Set(narRows.map(r => r.fileHash)),
      narinfoHashParts: hashParts,
      narFilesWithoutNarinfo: narRows.filter(r => !pointedAt.has(r.id)).length,
      problems
    }
  } finally {
    db.close()
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
