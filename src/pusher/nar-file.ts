/**
 * Produces the compressed NAR file of one store path, in one streaming pass and constant memory:
 *
 *   NAR of PATH (nar-writer.ts, or nix-store --dump) ──▶ sha256 + count (NarHash/NarSize) ──▶ compressor (zstd|xz)
 *                               ──▶ sha256 + count (FileHash/FileSize) ──▶ temp file
 *
 * The file hash is the NAR's URL name, so the file must be complete before its upload starts;
 * the caller streams the temp file as the request body and removes it afterwards.
 */
import { spawn } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { createWriteStream } from 'node:fs'
import { rm } from 'node:fs/promises'
import path from 'node:path'
import { Readable, Transform, type TransformCallback } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { extensionFor } from '../nix/compression.js'
import { encodeNix32 } from '../nix/nix32.js'
import { CompressStream } from 'zstd-napi'
import { createCompressor } from '../nix/codecs.js'
import type { PushCompression } from './config.js'
import { NixCommandError } from './closure.js'
import { dumpPath } from './nar-writer.js'

export interface NarFile {
  /** Temp file holding the compressed bytes. */
  file: string
  compression: PushCompression
  /** nix32 SHA-256 of the compressed bytes: the URL name. */
  fileHash: string
  fileSize: number
  narHash: Buffer
  narSize: number
  /** `nar/<fileHash>.nar.zst` */
  url: string
}

function hashing (hash: ReturnType<typeof createHash>, counter: { bytes: number }): Transform {
  return new Transform({
    highWaterMark: 1 << 20,
    transform (chunk: Buffer, _enc, done: TransformCallback) {
      hash.update(chunk)
      counter.bytes += chunk.length
      done(null, chunk)
    }
  })
}

export type NarSource = 'in-process' | 'nix-store'

/**
 * zstd with one worker thread: libzstd compresses off the main thread, which then only hashes
 * and moves bytes. The pusher's main thread was the bottleneck of a push on two cores (measured
 * with bench/push-throughput.ts); zstd's multi-threaded output is deterministic.
 */
function compressor (compression: PushCompression, level?: number): Transform {
  if (compression === 'zstd') return new CompressStream({ compressionLevel: level ?? 3, nbWorkers: 1 })
  return createCompressor(compression, level)
}

/**
 * `source`: 'in-process' serialises the path here (nar-writer.ts, no process start-up);
 * 'nix-store' runs `nix-store --dump`, the reference, used when the other fails or disagrees.
 */
export async function dumpCompressed (storePath: string, tmpDir: string, compression: PushCompression,
  level?: number, source: NarSource = 'in-process'): Promise<NarFile> {
  const file = path.join(tmpDir, `nar-${process.pid}-${randomBytes(8).toString('hex')}.tmp`)
  const narHash = createHash('sha256')
  const narCount = { bytes: 0 }
  const fileHash = createHash('sha256')
  const fileCount = { bytes: 0 }
  const finish = (): NarFile => {
    const hash = encodeNix32(fileHash.digest())
    return {
      file,
      compression,
      fileHash: hash,
      fileSize: fileCount.bytes,
      narHash: narHash.digest(),
      narSize: narCount.bytes,
      url: `nar/${hash}.nar${extensionFor(compression)}`
    }
  }
  if (source === 'in-process') {
    try {
      await pipeline(Readable.from(dumpPath(storePath)), hashing(narHash, narCount), compressor(compression, level),
        hashing(fileHash, fileCount), createWriteStream(file, { flags: 'wx', mode: 0o600 }))
    } catch (err) {
      await rm(file, { force: true })
      throw err
    }
    return finish()
  }
  const child = spawn('nix-store', ['--dump', storePath], { stdio: ['ignore', 'pipe', 'pipe'] })
  let stderr = ''
  child.stderr.setEncoding('utf8').on('data', (s: string) => { if (stderr.length < 4096) stderr += s })
  const exited = new Promise<number | null>((resolve, reject) => {
    child.once('error', reject)
    child.once('close', code => resolve(code))
  })
  try {
    await pipeline(child.stdout, hashing(narHash, narCount), compressor(compression, level),
      hashing(fileHash, fileCount), createWriteStream(file, { flags: 'wx', mode: 0o600 }))
    const code = await exited
    if (code !== 0) {
      throw new NixCommandError(`nix-store --dump ${storePath} failed: ${stderr.trim().split('\n')[0] ?? `exit ${code}`}`, stderr)
    }
  } catch (err) {
    child.kill()
    await rm(file, { force: true })
    throw err
  }
  return finish()
}
