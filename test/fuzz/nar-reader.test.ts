/**
 * Property-based fuzzing of the streaming NAR validator (src/nix/nar-reader.ts) and of the
 * upload pipeline around it (src/storage/nar-ingest.ts), which adds the hashes and decompression.
 *
 * Properties:
 *   - a NAR of any random file tree (regular files, executables, symlinks, sorted directories) is
 *     accepted whatever the chunk boundaries, with its size, its hash and every node reported
 *   - the generator agrees with the pusher's NAR writer (src/pusher/nar-writer.ts) on real files
 *   - random bytes and mutated NARs (bits flipped, bytes inserted, deleted, duplicated, length
 *     words rewritten, truncated), in random chunks: the reader never throws anything but
 *     NARWHAL_NAR_MALFORMED, and accepts exactly what an independent whole-buffer reference
 *     reader accepts (the canonical NARs); an accepted mutation reports its own size and hash
 *   - ingestNar, fed chunked bodies (uncompressed, gzip, brotli, zstd): valid ones are stored with
 *     the right FileHash/FileSize/NarHash/NarSize; mutated ones are refused with a NarwhalError
 *     and leave nothing behind, or, when they still decompress to a canonical NAR, report the
 *     hash and size of that NAR
 *
 * Seed and run counts: test/fuzz/fuzz-settings.ts (FUZZ_SEED, FUZZ_SCALE).
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { chmodSync, mkdirSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { Readable, Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import zlib from 'node:zlib'
import fc from 'fast-check'
import { DecompressStream } from 'zstd-napi'
import { isNarwhalError } from '../../src/errors.js'
import type { Compression } from '../../src/nix/compression.js'
import { MAX_DEPTH, MAX_NAME_BYTES, MAX_TARGET_BYTES, NarReader, type NarEntry } from '../../src/nix/nar-reader.js'
import { encodeNix32 } from '../../src/nix/nix32.js'
import { dumpPath } from '../../src/pusher/nar-writer.js'
import { FileBlobStore } from '../../src/storage/file-blob-store.js'
import { createCompressor } from '../../src/nix/codecs.js'
import { layoutFor } from '../../src/storage/layout.js'
import { ingestNar } from '../../src/storage/nar-ingest.js'
import { runBytes } from '../helpers/upload.js'
import { makeTempDir } from '../unit/nix-test-helpers.js'
import { byteMutation, chunking, chunksOf, deepTree, mutateAll, narOf, narTree, type NarTree } from './arbitraries.js'
import { checkProperty } from './fuzz-settings.js'

const TIMEOUT = 5 * 60 * 1000

function sha256 (data: Uint8Array): Buffer {
  return createHash('sha256').update(data).digest()
}

interface ReadOutcome {
  accepted: boolean
  /** Set when accepted. */
  bytesRead?: bigint
  /** SHA-256 of the chunks as they were fed, as nar-ingest.ts hashes them. */
  hash?: Buffer
  entries: NarEntry[]
}

/** Feeds `chunks` to a NarReader; a refusal must be NARWHAL_NAR_MALFORMED, anything else fails. */
function readChunks (chunks: readonly Buffer[]): ReadOutcome {
  const entries: NarEntry[] = []
  const reader = new NarReader({ onEntry: e => entries.push(e) })
  const hash = createHash('sha256')
  try {
    for (const chunk of chunks) {
      reader.write(chunk)
      hash.update(chunk)
    }
    reader.end()
  } catch (err) {
    if (!isNarwhalError(err) || err.code !== 'NARWHAL_NAR_MALFORMED') {
      assert.fail(`NarReader threw ${String(err)} (${(err as { code?: unknown }).code ?? 'no code'}), not NARWHAL_NAR_MALFORMED`)
    }
    // A failed reader keeps failing the same way: no state survives the error.
    assert.throws(() => reader.end(), (again: unknown) => again === err)
    return { accepted: false, entries }
  }
  return { accepted: true, bytesRead: reader.bytesRead, hash: hash.digest(), entries }
}

// ---------------------------------------------------------------------------------------------
// The reference: a whole-buffer reader written from the format description, not from the code
// under test. It parses leniently, then accepts only if the tree obeys the limits and serialises
// back to exactly the input, which is what "canonical" means.

class NotANar extends Error {}

function referenceAccepts (bytes: Buffer): boolean {
  let pos = 0
  function token (): Buffer {
    if (bytes.length - pos < 8) throw new NotANar()
    const length = bytes.readBigUInt64LE(pos)
    pos += 8
    if (length > BigInt(bytes.length - pos)) throw new NotANar()
    const value = bytes.subarray(pos, pos + Number(length))
    pos += Number(length) + ((8 - (Number(length) % 8)) % 8)
    if (pos > bytes.length) throw new NotANar()
    return value
  }
  function keyword (word: string): void {
    if (!token().equals(Buffer.from(word))) throw new NotANar()
  }
  function node (enclosingDirectories: number): NarTree {
    keyword('(')
    keyword('type')
    const type = token().toString('latin1')
    if (type === 'regular') {
      let field = token()
      let executable = false
      if (field.equals(Buffer.from('executable'))) {
        token() // its value; anything but "" makes the re-serialisation differ
        executable = true
        field = token()
      }
      if (!field.equals(Buffer.from('contents'))) throw new NotANar()
      const contents = token()
      keyword(')')
      return { type: 'regular', contents, executable }
    }
    if (type === 'symlink') {
      keyword('target')
      const target = token()
      if (target.length === 0 || target.length > MAX_TARGET_BYTES || target.includes(0)) throw new NotANar()
      keyword(')')
      return { type: 'symlink', target }
    }
    if (type === 'directory') {
      if (enclosingDirectories >= MAX_DEPTH) throw new NotANar()
      const entries: Array<[Buffer, NarTree]> = []
      for (;;) {
        const field = token()
        if (field.equals(Buffer.from(')'))) return { type: 'directory', entries }
        if (!field.equals(Buffer.from('entry'))) throw new NotANar()
        keyword('(')
        keyword('name')
        const name = token()
        const text = name.toString('latin1')
        if (name.length === 0 || name.length > MAX_NAME_BYTES || text === '.' || text === '..' || name.includes(0x2f) || name.includes(0)) {
          throw new NotANar()
        }
        const previous = entries.at(-1)?.[0]
        if (previous !== undefined && Buffer.compare(previous, name) >= 0) throw new NotANar()
        keyword('node')
        entries.push([name, node(enclosingDirectories + 1)])
        keyword(')')
      }
    }
    throw new NotANar()
  }
  try {
    keyword('nix-archive-1')
    const tree = node(0)
    return pos === bytes.length && narOf(tree).equals(bytes)
  } catch (err) {
    if (err instanceof NotANar) return false
    throw err
  }
}

/** What the reader must report for `tree`, in NAR order, without the offsets (checked apart). */
function expectedEntries (tree: NarTree, at = ''): Array<Record<string, unknown>> {
  switch (tree.type) {
    case 'regular': return [{ path: at, type: 'regular', size: BigInt(tree.contents.length), executable: tree.executable }]
    case 'symlink': return [{ path: at, type: 'symlink', target: tree.target.toString('utf8') }]
    case 'directory': return [{ path: at, type: 'directory' }, ...tree.entries.flatMap(([name, child]) =>
      expectedEntries(child, at === '' ? name.toString('utf8') : `${at}/${name.toString('utf8')}`))]
  }
}

function withoutOffset (entry: NarEntry): Record<string, unknown> {
  if (entry.type !== 'regular') return { ...entry }
  return { path: entry.path, type: entry.type, size: entry.size, executable: entry.executable }
}

function contentsInOrder (tree: NarTree): Buffer[] {
  if (tree.type === 'regular') return [tree.contents]
  if (tree.type === 'directory') return tree.entries.flatMap(([, child]) => contentsInOrder(child))
  return []
}

test('valid NARs are accepted whatever the chunking, with their size, hash and nodes', { timeout: TIMEOUT }, async (t) => {
  const input = fc.tuple(fc.oneof({ weight: 9, arbitrary: narTree }, { weight: 1, arbitrary: deepTree }), chunking)
  await checkProperty(t, fc.property(input, ([tree, how]) => {
    const nar = narOf(tree)
    const depth = directoryDepth(tree)
    const outcome = readChunks(chunksOf(nar, how))
    if (depth > MAX_DEPTH) {
      assert.equal(outcome.accepted, false, `${depth} nested directories must be refused`)
      return
    }
    assert.ok(outcome.accepted, 'a valid NAR is accepted')
    assert.equal(outcome.bytesRead, BigInt(nar.length))
    assert.deepEqual(outcome.hash, sha256(nar))
    assert.deepEqual(outcome.entries.map(withoutOffset), expectedEntries(tree))
    // Each regular file's narOffset points at its contents, as Nix's .ls listing needs.
    const files = outcome.entries.filter((e): e is Extract<NarEntry, { type: 'regular' }> => e.type === 'regular')
    assert.deepEqual(files.map(f => nar.subarray(Number(f.narOffset), Number(f.narOffset + f.size))), contentsInOrder(tree))
    assert.ok(referenceAccepts(nar), 'the reference agrees')
  }), 1500)
})

function directoryDepth (tree: NarTree): number {
  if (tree.type !== 'directory') return 0
  return 1 + Math.max(0, ...tree.entries.map(([, child]) => directoryDepth(child)))
}

test('the generated NARs are what the pusher\'s NAR writer makes of the same files', { timeout: TIMEOUT }, async (t) => {
  const { dir, cleanup } = makeTempDir()
  t.after(cleanup)
  let run = 0
  function materialise (tree: NarTree, at: Buffer): void {
    if (tree.type === 'regular') {
      writeFileSync(at, tree.contents)
      chmodSync(at, tree.executable ? 0o755 : 0o644)
    } else if (tree.type === 'symlink') {
      // Linux stores at most PATH_MAX - 1 = 4095 bytes in a symlink; the NAR format allows 4096.
      symlinkSync(tree.target.subarray(0, 4095), at)
    } else {
      mkdirSync(at)
      for (const [name, child] of tree.entries) materialise(child, Buffer.concat([at, Buffer.from('/'), name]))
    }
  }
  await checkProperty(t, fc.asyncProperty(narTree, async tree => {
    const root = path.join(dir, `root-${run++}`)
    try {
      materialise(tree, Buffer.from(root))
      const chunks: Buffer[] = []
      for await (const chunk of dumpPath(root)) chunks.push(chunk)
      assert.deepEqual(Buffer.concat(chunks), narOf(onDisk(tree)))
    } finally {
      rmSync(root, { recursive: true, force: true })
    }
  }), 150)
})

/** `tree` as it can exist on Linux: symlink targets cut to 4095 bytes. */
function onDisk (tree: NarTree): NarTree {
  if (tree.type === 'symlink') return { type: 'symlink', target: tree.target.subarray(0, 4095) }
  if (tree.type === 'directory') return { type: 'directory', entries: tree.entries.map(([name, child]) => [name, onDisk(child)]) }
  return tree
}

test('random bytes and mutated NARs: refused with NARWHAL_NAR_MALFORMED exactly when the reference refuses them', { timeout: TIMEOUT }, async (t) => {
  const mutatedNar = fc.tuple(narTree, fc.array(byteMutation, { minLength: 1, maxLength: 4 }))
    .map(([tree, mutations]) => ({ original: narOf(tree), bytes: mutateAll(narOf(tree), mutations) }))
  const randomBytes = fc.uint8Array({ maxLength: 200 }).map(b => ({ original: undefined, bytes: Buffer.from(b) }))
  // Random bytes behind a valid magic, so the reader gets past the first token.
  const afterMagic = fc.uint8Array({ maxLength: 200 }).map(b => ({
    original: undefined,
    bytes: Buffer.concat([narOf({ type: 'regular', contents: Buffer.alloc(0), executable: false }).subarray(0, 24), b])
  }))
  const input = fc.tuple(fc.oneof({ weight: 8, arbitrary: mutatedNar }, { weight: 1, arbitrary: randomBytes }, { weight: 1, arbitrary: afterMagic }), chunking)
  await checkProperty(t, fc.property(input, ([{ original, bytes }, how]) => {
    const outcome = readChunks(chunksOf(bytes, how))
    assert.equal(outcome.accepted, referenceAccepts(bytes), outcome.accepted ? 'accepted a NAR the reference refuses' : 'refused a NAR the reference accepts')
    if (outcome.accepted) {
      assert.equal(outcome.bytesRead, BigInt(bytes.length))
      assert.deepEqual(outcome.hash, sha256(bytes))
      if (original !== undefined && !original.equals(bytes)) assert.notDeepEqual(outcome.hash, sha256(original))
    }
  }), 3000)
})

// ---------------------------------------------------------------------------------------------
// The upload pipeline: hashes, decompression and the temp file around the reader.

const INGEST_METHODS = ['none', 'gzip', 'br', 'zstd'] as const

async function compress (data: Buffer, method: Compression): Promise<Buffer> {
  const chunks: Buffer[] = []
  await pipeline(Readable.from([data]), createCompressor(method), new Writable({
    write (chunk: Buffer, _enc, done) { chunks.push(chunk); done() }
  }))
  return Buffer.concat(chunks)
}

/**
 * What a body that ingestNar accepted decompresses to, found independently of the decoders under
 * test: zlib's one-shot functions for gzip and brotli, zstd-napi's own stream for zstd, and the
 * xz and bzip2 programs should a mutation turn a body into one of theirs.
 */
async function decompress (body: Buffer, method: Compression): Promise<Buffer> {
  if (method === 'none') return body
  if (method === 'gzip') return zlib.gunzipSync(body)
  if (method === 'br') return zlib.brotliDecompressSync(body)
  if (method === 'xz') return await runBytes('xz', ['-dc'], body)
  if (method === 'bzip2') return await runBytes('bzip2', ['-dc'], body)
  const chunks: Buffer[] = []
  await pipeline(Readable.from([body]), new DecompressStream(), new Writable({
    write (chunk: Buffer, _enc, done) { chunks.push(chunk); done() }
  }))
  return Buffer.concat(chunks)
}

test('ingestNar: chunked valid bodies are stored with their hashes; mutated ones are refused cleanly or report their own', { timeout: TIMEOUT }, async (t) => {
  const { dir, cleanup } = makeTempDir()
  t.after(cleanup)
  const layout = layoutFor(dir)
  const store = new FileBlobStore(layout)
  store.init()
  const input = fc.record({
    tree: narTree,
    method: fc.constantFrom(...INGEST_METHODS),
    mutations: fc.oneof(fc.constant([]), fc.array(byteMutation, { minLength: 1, maxLength: 3 })),
    how: chunking
  })
  await checkProperty(t, fc.asyncProperty(input, async ({ tree, method, mutations, how }) => {
    const nar = narOf(tree)
    const original = await compress(nar, method)
    const body = mutateAll(original, mutations)
    // Named by its own hash, so the decompression and the NAR check decide, not the name.
    const fileHash = encodeNix32(sha256(body))
    let result
    try {
      const verified = await ingestNar(Readable.from(chunksOf(body, how)), fileHash, store, { maxBytes: 1 << 24, maxNarSize: Number.MAX_SAFE_INTEGER, declaredBytes: body.length, reserveBytes: 0 })
      // ingestNar leaves the verified bytes in a finished blob for the caller to commit.
      await verified.blob.discard()
      result = verified.nar
    } catch (err) {
      if (!isNarwhalError(err) || err.statusCode >= 500) assert.fail(`ingestNar threw ${String(err)}, not a 4xx NarwhalError`)
      assert.ok(!body.equals(original), `a valid ${method} NAR was refused: ${err.message}`)
      assert.deepEqual(readdirSync(layout.tmpDir), [], 'a refused upload leaves no temp file')
      return
    }
    assert.equal(result.fileHash, fileHash)
    assert.equal(result.fileSize, body.length)
    assert.deepEqual(readdirSync(layout.tmpDir), [])
    if (body.equals(original)) {
      assert.equal(result.compression, method)
      assert.equal(result.narHash, encodeNix32(sha256(nar)))
      assert.equal(result.narSize, nar.length)
      return
    }
    // A mutation that still decompresses to a canonical NAR: it must report that NAR. It is
    // usually another one; only a change the codec ignores (a gzip header's timestamp) gives ours.
    const inner = await decompress(body, result.compression)
    assert.ok(referenceAccepts(inner), 'an accepted body decompresses to a canonical NAR')
    assert.equal(result.narHash, encodeNix32(sha256(inner)))
    assert.equal(result.narSize, inner.length)
  }), 250)
})
