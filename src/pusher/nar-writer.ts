/**
 * Serialises a store path as a NAR in-process, byte for byte what `nix-store --dump` writes
 * (fact sheet §4.4), without starting a nix-store process per path: that start-up (~150 ms here)
 * dominated pushes of closures with many small paths.
 *
 *   str("nix-archive-1") node
 *   node      = "(" "type" ( "regular" ["executable" ""] "contents" str(bytes)
 *                          | "symlink" "target" str(target)
 *                          | "directory" { "entry" "(" "name" str(name) "node" node ")" } ) ")"
 *   str(s)    = u64le(len(s)) s, zero-padded to a multiple of 8 (nix/nar-encoding.ts)
 *
 * Entries are sorted byte-wise by name (Nix keeps them in a std::map), and only the owner's
 * execute bit makes a file "executable", as in Nix's dumpPath. The caller checks the NarHash
 * against the store's record, so any difference would be caught, never uploaded.
 */
import { lstatSync, readdirSync, readlinkSync } from 'node:fs'
import { open } from 'node:fs/promises'
import path from 'node:path'
import { narLength, narPadding, narString } from '../nix/nar-encoding.js'

const CHUNK = 1 << 20

class Out {
  parts: Buffer[] = []
  length = 0

  push (b: Buffer): void {
    this.parts.push(b)
    this.length += b.length
  }

  take (): Buffer {
    const b = Buffer.concat(this.parts, this.length)
    this.parts = []
    this.length = 0
    return b
  }
}

function str (out: Out, s: string | Buffer): void {
  out.push(narString(s))
}

async function * node (out: Out, p: Buffer): AsyncGenerator<Buffer> {
  const st = lstatSync(p)
  str(out, '(')
  str(out, 'type')
  if (st.isSymbolicLink()) {
    str(out, 'symlink')
    str(out, 'target')
    str(out, readlinkSync(p, { encoding: 'buffer' }))
  } else if (st.isFile()) {
    str(out, 'regular')
    if ((st.mode & 0o100) !== 0) {
      str(out, 'executable')
      str(out, '')
    }
    str(out, 'contents')
    out.push(narLength(st.size))
    const handle = await open(p, 'r')
    try {
      let remaining = st.size
      while (remaining > 0) {
        if (out.length >= CHUNK) yield out.take()
        const buffer = Buffer.allocUnsafe(Math.min(CHUNK, remaining))
        const { bytesRead } = await handle.read(buffer, 0, buffer.length, null)
        if (bytesRead === 0) throw new Error(`${p.toString()} shrank while it was being read`)
        out.push(bytesRead === buffer.length ? buffer : buffer.subarray(0, bytesRead))
        remaining -= bytesRead
      }
    } finally {
      await handle.close()
    }
    out.push(narPadding(st.size))
  } else if (st.isDirectory()) {
    str(out, 'directory')
    const names = readdirSync(p, { encoding: 'buffer' }).sort(Buffer.compare)
    for (const name of names) {
      str(out, 'entry')
      str(out, '(')
      str(out, 'name')
      str(out, name)
      str(out, 'node')
      yield * node(out, Buffer.concat([p, Buffer.from('/'), name]))
      str(out, ')')
      if (out.length >= CHUNK) yield out.take()
    }
  } else {
    throw new Error(`${p.toString()}: not a regular file, directory or symlink`)
  }
  str(out, ')')
}

/** The NAR of `storePath`, in chunks of about 1 MiB. */
export async function * dumpPath (storePath: string): AsyncGenerator<Buffer> {
  const out = new Out()
  str(out, 'nix-archive-1')
  yield * node(out, Buffer.from(path.resolve(storePath)))
  if (out.length > 0) yield out.take()
}
