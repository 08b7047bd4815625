/**
 * Shared helpers for the src/nix and src/signing unit tests: where the fixtures are, how to run
 * the real Nix in isolation, and a tiny NAR writer for hand-made malformed archives.
 *
 * A NAR token is a u64 little-endian length, the bytes and zero padding to 8:
 *   str("(") = 01 00 00 00 00 00 00 00 28 00 00 00 00 00 00 00
 */

import { execFileSync } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { narString } from '../../src/nix/nar-encoding.js'

/** The repository root, found from this file whether it runs from dist/ or from source. */
export const REPO_ROOT: string = (() => {
  let dir = path.dirname(fileURLToPath(import.meta.url))
  while (!existsSync(path.join(dir, 'test', 'fixtures'))) {
    const parent = path.dirname(dir)
    if (parent === dir) throw new Error('cannot find test/fixtures above ' + fileURLToPath(import.meta.url))
    dir = parent
  }
  return dir
})()

export function fixturePath (...parts: string[]): string {
  return path.join(REPO_ROOT, 'test', 'fixtures', ...parts)
}

export function readFixture (...parts: string[]): Buffer {
  return readFileSync(fixturePath(...parts))
}

export function readFixtureText (...parts: string[]): string {
  return readFixture(...parts).toString('utf8')
}

/** A temp dir removed by the returned cleanup function. */
export function makeTempDir (): { dir: string, cleanup: () => void } {
  const dir = mkdtempSync(path.join(tmpdir(), 'narwhal-unit-'))
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) }
}

/**
 * Runs a Nix command. It throws if Nix is missing: these tests prove interoperability with the
 * real client and must fail, not skip, without it. The environment keeps Nix off the network
 * and away from the user's narinfo cache.
 */
export function runNix (command: string, args: string[], tempDir: string, input?: string): string {
  return runNixBinary(command, args, tempDir, input).toString('utf8')
}

/** Like runNix, for commands that write binary (`nix-store --dump`). */
export function runNixBinary (command: string, args: string[], tempDir: string, input?: string): Buffer {
  return execFileSync(command, args, {
    input,
    maxBuffer: 256 * 1024 * 1024,
    stdio: ['pipe', 'pipe', 'pipe'],
    env: {
      ...process.env,
      NIX_CONFIG: 'experimental-features = nix-command\nsubstituters =\n',
      XDG_CACHE_HOME: path.join(tempDir, 'xdg-cache'),
      HOME: tempDir
    }
  })
}

/** One NAR token: u64 LE length, bytes, zero padding to a multiple of 8 (src/nix/nar-encoding.ts). */
export const str = narString

export type TreeNode =
  | { type: 'regular', contents: string | Uint8Array, executable?: boolean }
  | { type: 'symlink', target: string | Uint8Array }
  | { type: 'directory', entries: Array<[string | Uint8Array, TreeNode]> }

/** Serialises a node exactly as `nix-store --dump` would, entries in the order given (so tests
 * can write unsorted ones on purpose). */
export function narNode (node: TreeNode): Buffer {
  const parts: Buffer[] = []
  pushNode(node, parts)
  return Buffer.concat(parts)
}

// Into one list of parts, not a Buffer per level: the fuzz tests' trees nest 260 deep.
function pushNode (node: TreeNode, parts: Buffer[]): void {
  parts.push(str('('), str('type'))
  if (node.type === 'regular') {
    parts.push(str('regular'))
    if (node.executable === true) parts.push(str('executable'), str(''))
    parts.push(str('contents'), str(node.contents))
  } else if (node.type === 'symlink') {
    parts.push(str('symlink'), str('target'), str(node.target))
  } else {
    parts.push(str('directory'))
    for (const [name, child] of node.entries) {
      parts.push(str('entry'), str('('), str('name'), str(name), str('node'))
      pushNode(child, parts)
      parts.push(str(')'))
    }
  }
  parts.push(str(')'))
}

export function nar (node: TreeNode): Buffer {
  return Buffer.concat([str('nix-archive-1'), narNode(node)])
}
