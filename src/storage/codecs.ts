/**
 * Streaming decompressors (and compressors) for NAR bodies, one per method in
 * `nix/compression.ts`. Every codec is a Node Transform so a NAR flows through it in constant
 * memory, whatever its size: xz via liblzma (lzma-native), zstd via libzstd (zstd-napi), bzip2 in
 * pure JavaScript (unbzip2-stream), gzip and brotli from Node's own zlib.
 */
import { PassThrough, Transform, type Duplex, type TransformCallback } from 'node:stream'
import zlib from 'node:zlib'
import lzma from 'lzma-native'
import { CompressStream, DecompressStream } from 'zstd-napi'
import bz2 from 'unbzip2-stream'
import type { Compression } from '../nix/compression.js'

/** A decompressing Transform for a verifiable method. */
export function createDecompressor (method: Compression): Transform {
  switch (method) {
    case 'none': return new PassThrough({ highWaterMark: 1 << 20 })
    case 'xz': return driveInner(lzma.createDecompressor())
    case 'zstd': return new DecompressStream()
    case 'bzip2': return driveInner(bz2())
    case 'gzip': return zlib.createGunzip({ chunkSize: 1 << 18 })
    case 'br': return zlib.createBrotliDecompress({ chunkSize: 1 << 18 })
  }
}

/** A compressing Transform, for the pusher and for tests. */
export function createCompressor (method: Compression, level?: number): Transform {
  switch (method) {
    case 'none': return new PassThrough({ highWaterMark: 1 << 20 })
    case 'xz': return driveInner(lzma.createCompressor({ preset: level ?? 6 }))
    case 'zstd': return new CompressStream(level === undefined ? {} : { compressionLevel: level })
    case 'gzip': return zlib.createGzip(level === undefined ? {} : { level })
    case 'br': return zlib.createBrotliCompress()
    case 'bzip2': throw new Error('narwhal does not compress with bzip2; use zstd or xz')
  }
}

/**
 * Drives a stream that does not follow Node's current stream contract from a real Transform:
 * unbzip2-stream is a classic `through` stream, and lzma-native's readable-stream@3 Transform
 * never reports its end inside stream.pipeline() (seen here with Node 20: all bytes arrive, the
 * pipeline never settles). Plain write()/'data'/'end' work with both.
 */
function driveInner (inner: Duplex): Transform {
  let failed: Error | undefined
  const outer = new Transform({
    transform (chunk: Buffer, _enc, done: TransformCallback) {
      if (failed !== undefined) { done(failed); return }
      // Input-side backpressure: wait while the inner stream's buffer is full.
      if (inner.write(chunk)) done()
      else inner.once('drain', () => done(failed))
    },
    flush (done: TransformCallback) {
      if (failed !== undefined) { done(failed); return }
      inner.once('end', () => done(failed))
      inner.end()
    }
  })
  inner.on('data', (data: Buffer) => outer.push(data))
  inner.on('error', (err: Error) => {
    failed = err
    outer.destroy(err)
  })
  return outer
}
