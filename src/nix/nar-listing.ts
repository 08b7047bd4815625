/**
 * The `.ls` file of a binary cache: a JSON listing of a NAR's tree, so tools can browse a path
 * without downloading it (fact sheet §4.5, [2.8] `nar-accessor.cc` `listNar`). Built from the
 * entries a `NarReader` reports:
 *
 *   {"version":1,"root":{"type":"directory","entries":{
 *     "bin":{"type":"directory","entries":{"hello":{"type":"regular","size":58760,"executable":true,"narOffset":400}}},
 *     "lib":{"type":"symlink","target":"lib64"}}}}
 *
 * Written by hand rather than with JSON.stringify for two reasons: sizes are u64 (bigint), and
 * entry order must stay byte-wise sorted as in the NAR, while a JS object would move keys that
 * look like integers ("10", "2") to the front. Like Nix 2.8, `executable` is written only when
 * true. No whitespace, as Nix writes it.
 */

import { NarwhalError } from '../errors.js'
import type { NarEntry } from './nar-reader.js'

type ListingNode =
  | { type: 'regular', size: bigint, executable: boolean, narOffset: bigint }
  | { type: 'symlink', target: string }
  | { type: 'directory', entries: Map<string, ListingNode> }

export class NarListing {
  #root: ListingNode | undefined
  /** Directories by path, so an entry finds its parent in O(1). Entries arrive parents first. */
  readonly #directories = new Map<string, Map<string, ListingNode>>()

  add (entry: NarEntry): void {
    let node: ListingNode
    if (entry.type === 'directory') {
      const entries = new Map<string, ListingNode>()
      this.#directories.set(entry.path, entries)
      node = { type: 'directory', entries }
    } else if (entry.type === 'symlink') {
      node = { type: 'symlink', target: entry.target }
    } else {
      node = { type: 'regular', size: entry.size, executable: entry.executable, narOffset: entry.narOffset }
    }
    if (entry.path === '') {
      this.#root = node
      return
    }
    const slash = entry.path.lastIndexOf('/')
    const parent = this.#directories.get(slash < 0 ? '' : entry.path.slice(0, slash))
    if (parent === undefined) {
      throw new NarwhalError('NARWHAL_INTERNAL', 'NAR listing: an entry arrived before its directory')
    }
    parent.set(entry.path.slice(slash + 1), node)
  }

  /** The `.ls` document. Throws if no entry was added. */
  toString (): string {
    if (this.#root === undefined) throw new NarwhalError('NARWHAL_INTERNAL', 'NAR listing: no root entry')
    const parts: string[] = ['{"version":1,"root":']
    writeNode(this.#root, parts)
    parts.push('}')
    return parts.join('')
  }
}

/** Convenience: the `.ls` document for a complete list of entries in NAR order. */
export function narListingJson (entries: Iterable<NarEntry>): string {
  const listing = new NarListing()
  for (const entry of entries) listing.add(entry)
  return listing.toString()
}

function writeNode (node: ListingNode, parts: string[]): void {
  switch (node.type) {
    case 'regular':
      parts.push(`{"type":"regular","size":${node.size}`)
      if (node.executable) parts.push(',"executable":true')
      // Nix 2.8 leaves out a zero offset; a real NAR never has one.
      if (node.narOffset !== 0n) parts.push(`,"narOffset":${node.narOffset}`)
      parts.push('}')
      return
    case 'symlink':
      parts.push(`{"type":"symlink","target":${JSON.stringify(node.target)}}`)
      return
    case 'directory': {
      parts.push('{"type":"directory","entries":{')
      let first = true
      for (const [name, child] of node.entries) {
        parts.push(first ? '' : ',', JSON.stringify(name), ':')
        writeNode(child, parts)
        first = false
      }
      parts.push('}}')
    }
  }
}
