/**
 * The pusher's signing: loading the secret keys safely, and building the signed narinfo of a path.
 *
 * A secret key file must be owned by the user running the pusher and readable by nobody else
 * (mode 0600 or stricter): otherwise any build user could sign whatever it likes into the cache,
 * and the pusher refuses to start. Key material never reaches a log: SecretKey prints redacted,
 * and errors name the file, never its contents.
 */
import { readFileSync, statSync } from 'node:fs'
import { ConfigError } from '../config/values.js'
import { fingerprintPath } from '../nix/fingerprint.js'
import { formatNarInfo, type NarInfo } from '../nix/narinfo.js'
import { decodeNix32 } from '../nix/nix32.js'
import { parseSecretKey, type SecretKey } from '../signing/keys.js'
import type { PathInfo } from './closure.js'
import type { NarFile } from './nar-file.js'

/** Checks ownership and mode before reading a word of the file. */
export function checkSecretKeyFile (file: string, uid = process.getuid?.()): void {
  let st
  try {
    st = statSync(file)
  } catch (err) {
    throw new ConfigError(`secret key file ${file}: cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'})`)
  }
  if (!st.isFile()) throw new ConfigError(`secret key file ${file}: not a regular file`)
  if (uid !== undefined && st.uid !== uid) {
    throw new ConfigError(`secret key file ${file}: owned by uid ${st.uid}, not by the user running the pusher (uid ${uid}); ` +
      'chown it to that user')
  }
  if ((st.mode & 0o077) !== 0) {
    throw new ConfigError(`secret key file ${file}: mode ${(st.mode & 0o777).toString(8).padStart(4, '0')} lets other users ` +
      `read it; chmod 600 ${file}`)
  }
}

export function loadSecretKeys (files: readonly string[]): SecretKey[] {
  return files.map(file => {
    checkSecretKeyFile(file)
    const text = readFileSync(file, 'utf8')
    try {
      return parseSecretKey(text)
    } catch {
      throw new ConfigError(`secret key file ${file}: not a Nix secret key (expected NAME:BASE64 of 64 bytes, ` +
        'as written by nix-store --generate-binary-cache-key or narwhal keygen)')
    }
  })
}

export function readTokenFile (file: string | undefined): string | undefined {
  if (file === undefined) return undefined
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch (err) {
    throw new ConfigError(`token file ${file}: cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'})`)
  }
  const token = text.trim()
  if (token === '') throw new ConfigError(`token file ${file}: is empty`)
  return token
}

/** The narinfo text of `info` for the uploaded `nar`, with every existing signature plus ours. */
export function buildNarinfo (info: PathInfo, nar: Pick<NarFile, 'url' | 'fileHash' | 'fileSize'> & { compression: string },
  keys: readonly SecretKey[]): string {
  const narSize = BigInt(info.narSize)
  const fingerprint = fingerprintPath(info.path, info.narHash, narSize, info.references)
  const sigs = new Set(info.sigs)
  for (const key of keys) {
    // Keep an existing signature by the same key name: re-signing gives the same bytes anyway
    // (Ed25519 is deterministic), and a different one would be refused as a forgery.
    if (![...sigs].some(s => s.startsWith(`${key.name}:`))) sigs.add(key.sign(fingerprint))
  }
  const narinfo: NarInfo = {
    storePath: info.path,
    url: nar.url,
    compression: nar.compression,
    fileHash: decodeNix32(nar.fileHash),
    fileSize: BigInt(nar.fileSize),
    narHash: info.narHash,
    narSize,
    references: info.references,
    sigs: [...sigs]
  }
  if (info.deriver !== undefined) narinfo.deriver = info.deriver
  if (info.ca !== undefined) narinfo.ca = info.ca
  return formatNarInfo(narinfo)
}
