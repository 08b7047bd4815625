/**
 * Serialises a store path as a NAR in-process, byte for byte what `nix-store --dump` writes
 * (fact sheet §4.4), without starting a nix-store process per path: that start-up (~150 ms here)
 * dominated pushes of closures with many small paths.
 *
 *   str("nix-archive-1") node
 *   node      = "(" "type" ( "regular" ["executable" ""] "contents" str(bytes)
 *                          | "symlink" "target" str(target)
 *                          | "directory" { "entry" "(" "name" str(name) "node" node ")" } ) ")"
 *   str(s)    = u64le(len(s)) s, zero-padded to a multiple of 8
 *
 * Entries are sorted byte-wise by name (Nix keeps them in a std::map), and only the owner's
 * execute bit makes a file "executable", as in Nix's dumpPath. The caller checks the NarHash
 * against the store's record, so any difference would be caught, never uploaded.
 *
 * Synchronous, into one buffer: files are read with readSync straight into it and each full
 * buffer is handed out, to be consumed before the next is asked for: promise-based reads, a buffer
 * per chunk and the copies joining them cost a third of the pusher's main thread (BENCHMARKS.md).
 */
import { closeSync, lstatSync, openSync, readdirSync, readlinkSync, readSync } from 'node:fs'
import path from 'node:path'
import { narLength, narPadding, narString } from '../nix/nar-encoding.js'

const CHUNK = 1 << 20

/**
 * A buffer being filled; `pos` bytes of it are NAR. Once full and handed out it is written over
 * from the start, or with `fresh` replaced by a new one (for a caller that keeps the chunks).
 */
interface Sink { buf: Buffer, pos: number, fresh: boolean }

/** Hands out the full buffer and starts the next. */
function * full (sink: Sink): Generator<Buffer> {
  yield sink.buf
  sink.pos = 0
  if (sink.fresh) sink.buf = Buffer.allocUnsafe(CHUNK)
}

const T = Object.fromEntries(['nix-archive-1', '(', ')', 'type', 'regular', 'executable', '', 'contents', 'symlink', 'target',
  'directory', 'entry', 'name', 'node'].map(s => [s, narString(s)]))

function * put (sink: Sink, src: Buffer): Generator<Buffer> {
  let off = 0
  while (off < src.length) {
    const n = src.copy(sink.buf, sink.pos, off)
    sink.pos += n
    off += n
    if (sink.pos === sink.buf.length) yield * full(sink)
  }
}

function * tokens (sink: Sink, ...names: string[]): Generator<Buffer> {
  for (const name of names) yield * put(sink, T[name] as Buffer)
}

function * contents (sink: Sink, p: Buffer, size: number): Generator<Buffer> {
  yield * put(sink, narLength(size))
  const fd = openSync(p, 'r')
  try {
    let remaining = size
    while (remaining > 0) {
      if (sink.pos === sink.buf.length) yield * full(sink)
      const n = readSync(fd, sink.buf, sink.pos, Math.min(sink.buf.length - sink.pos, remaining), null)
      if (n === 0) throw new Error(`${p.toString()} shrank while it was being read`)
      sink.pos += n
      remaining -= n
    }
  } finally {
    closeSync(fd)
  }
  yield * put(sink, narPadding(size))
}

function * node (sink: Sink, p: Buffer): Generator<Buffer> {
  const st = lstatSync(p)
  yield * tokens(sink, '(', 'type')
  if (st.isSymbolicLink()) {
    yield * tokens(sink, 'symlink', 'target')
    yield * put(sink, narString(readlinkSync(p, { encoding: 'buffer' })))
  } else if (st.isFile()) {
    yield * tokens(sink, 'regular')
    if ((st.mode & 0o100) !== 0) yield * tokens(sink, 'executable', '')
    yield * tokens(sink, 'contents')
    yield * contents(sink, p, st.size)
  } else if (st.isDirectory()) {
    yield * tokens(sink, 'directory')
    const names = readdirSync(p, { encoding: 'buffer' }).sort(Buffer.compare)
    for (const name of names) {
      yield * tokens(sink, 'entry', '(', 'name')
      yield * put(sink, narString(name))
      yield * tokens(sink, 'node')
      yield * node(sink, Buffer.concat([p, Buffer.from('/'), name]))
      yield * tokens(sink, ')')
    }
  } else {
    throw new Error(`${p.toString()}: not a regular file, directory or symlink`)
  }
  yield * tokens(sink, ')')
}

/**
 * The NAR of `storePath` in chunks of up to 1 MiB, all views of one buffer: each is valid only
 * until the next is asked for. With `fresh`, each chunk is a buffer of its own, to be kept.
 */
export function * narChunks (storePath: string, fresh = false): Generator<Buffer> {
  const sink: Sink = { buf: Buffer.allocUnsafe(CHUNK), pos: 0, fresh }
  yield * tokens(sink, 'nix-archive-1')
  yield * node(sink, Buffer.from(path.resolve(storePath)))
  if (sink.pos > 0) yield sink.buf.subarray(0, sink.pos)
}

/** The NAR of `storePath` as buffers of their own (for streams, which keep what they are given). */
export async function * dumpPath (storePath: string): AsyncGenerator<Buffer> {
  for (const chunk of narChunks(storePath)) yield Buffer.from(chunk)
}
