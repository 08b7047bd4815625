/**
 * The decoders the upload path verifies with (createDecoder in src/nix/codecs.ts), above all
 * the synchronous zstd loop: it reuses one output buffer and keeps decompression contexts for the
 * next upload, so chunk boundaries, frame boundaries, truncation and context reuse are tested
 * here against one-shot decompression of the same bytes.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { Readable, Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import zlib from 'node:zlib'
import { compress as zstdOneShot, decompress as zstdDecompressOneShot } from 'zstd-napi'
import type { Compression } from '../../src/nix/compression.js'
import { createCompressor, createDecoder, DecodeError, zstdFrameWindow } from '../../src/nix/codecs.js'
import { bzip2Threads, MAX_BZIP2_THREADS } from '../../src/nix/bzip2-thread.js'
import { compressBytes, runBytes } from '../helpers/upload.js'

async function compressed (data: Buffer, method: Compression): Promise<Buffer> {
  const chunks: Buffer[] = []
  await pipeline(Readable.from([data]), createCompressor(method), new Writable({
    write (chunk: Buffer, _enc, done) { chunks.push(chunk); done() }
  }))
  return Buffer.concat(chunks)
}

function pieces (bytes: Buffer, size: number): Buffer[] {
  const out: Buffer[] = []
  for (let i = 0; i < bytes.length; i += size) out.push(bytes.subarray(i, i + size))
  return out
}

/** Feeds `chunks` to a decoder and returns what it produced (copied: the zstd buffer is reused). */
async function decode (method: Compression, chunks: Buffer[]): Promise<Buffer> {
  const output: Buffer[] = []
  const decoder = createDecoder(method, out => output.push(Buffer.from(out)))
  try {
    for (const chunk of chunks) await decoder.write(chunk)
    await decoder.end()
  } finally {
    decoder.close()
  }
  return Buffer.concat(output)
}

/** Two decoders fed in turns, a chunk each, as two uploads at once are; what each produced. */
async function decodeInterleaved (method: Compression, chunksA: Buffer[], chunksB: Buffer[]): Promise<[Buffer, Buffer]> {
  const outA: Buffer[] = []
  const outB: Buffer[] = []
  const decA = createDecoder(method, out => outA.push(Buffer.from(out)))
  const decB = createDecoder(method, out => outB.push(Buffer.from(out)))
  try {
    for (let i = 0; i < Math.max(chunksA.length, chunksB.length); i++) {
      const ca = chunksA[i]
      const cb = chunksB[i]
      if (ca !== undefined) await decA.write(ca)
      if (cb !== undefined) await decB.write(cb)
    }
    await decA.end()
    await decB.end()
  } finally {
    decA.close()
    decB.close()
  }
  return [Buffer.concat(outA), Buffer.concat(outB)]
}

/** Compressible but not trivial: text with random words, larger than the 256 KiB output buffer. */
function sample (bytes: number): Buffer {
  const words = Array.from({ length: 500 }, () => randomBytes(1 + (randomBytes(1)[0] ?? 0) % 8).toString('hex'))
  const parts: string[] = []
  let length = 0
  while (length <= bytes) {
    const word = words[(randomBytes(2).readUInt16LE(0)) % words.length] ?? 'x'
    parts.push(word)
    length += word.length + 1
  }
  return Buffer.from(parts.join(' ')).subarray(0, bytes)
}

test('zstd: the same output in one chunk, in 1-byte chunks and in uneven chunks', async () => {
  const data = sample(700 * 1024)
  const body = await compressed(data, 'zstd')
  assert.deepEqual(await decode('zstd', [body]), data)
  assert.deepEqual(await decode('zstd', pieces(body, 1)), data)
  assert.deepEqual(await decode('zstd', pieces(body, 4093)), data)
})

test('zstd: output many times the buffer size from one small chunk is all delivered, in order', async () => {
  const data = Buffer.alloc(5 * 1024 * 1024, 'narwhal ')
  const body = await compressed(data, 'zstd')
  assert.ok(body.length < 64 * 1024, 'one socket read holds the whole body')
  let calls = 0
  const hash = createHash('sha256')
  const decoder = createDecoder('zstd', out => { calls++; hash.update(out) })
  assert.equal(decoder.write(body), undefined, 'under 8 MiB of output, synchronous')
  decoder.end()
  decoder.close()
  assert.ok(calls >= 20, `${calls} deliveries`)
  assert.deepEqual(hash.digest(), createHash('sha256').update(data).digest())
})

test('zstd: a chunk that expands enormously is decoded across turns of the event loop, all of it', async () => {
  // 256 MiB of zeros compress to a few KiB: one socket read's worth.
  const data = Buffer.alloc(256 * 1024 * 1024)
  const body = zstdOneShot(data)
  assert.ok(body.length < 64 * 1024, `${body.length} bytes`)
  let turns = 0
  const ticker = setInterval(() => { turns++ }, 0)
  const hash = createHash('sha256')
  let bytes = 0
  const decoder = createDecoder('zstd', out => { bytes += out.length; hash.update(out) })
  try {
    const pending = decoder.write(body)
    assert.ok(pending instanceof Promise, 'the decoder hands back a promise instead of blocking')
    await pending
    await decoder.end()
  } finally {
    clearInterval(ticker)
    decoder.close()
  }
  assert.equal(bytes, data.length)
  assert.deepEqual(hash.digest(), createHash('sha256').update(data).digest())
  assert.ok(turns >= 5, `timers ran ${turns} times while it decoded`)
})

test('zstd: concatenated frames (and a skippable frame between them) decode to the concatenation', async () => {
  const a = sample(300 * 1024)
  const b = sample(10 * 1024)
  const skippable = Buffer.concat([Buffer.from([0x50, 0x2a, 0x4d, 0x18]), Buffer.from([3, 0, 0, 0]), Buffer.from('abc')])
  // One streamed frame (window descriptor) and one one-shot frame (single segment, content size).
  const body = Buffer.concat([await compressed(a, 'zstd'), skippable, zstdOneShot(b)])
  const expected = Buffer.concat([a, b])
  assert.deepEqual(zstdDecompressOneShot(body), expected, 'libzstd itself agrees')
  assert.deepEqual(await decode('zstd', [body]), expected)
  assert.deepEqual(await decode('zstd', pieces(body, 1)), expected)
  assert.deepEqual(await decode('zstd', pieces(body, 777)), expected)
})

test('zstd: a stream cut anywhere but at a frame end is refused as truncated', async () => {
  const one = await compressed(sample(100 * 1024), 'zstd')
  const two = Buffer.concat([one, zstdOneShot(Buffer.from('second frame'))])
  for (const cut of [4, 5, 6, 12, Math.floor(one.length / 2), one.length - 1, one.length + 3, two.length - 1]) {
    for (const size of [1, 64 * 1024]) {
      await assert.rejects(decode('zstd', pieces(two.subarray(0, cut), size)), (err: unknown) => {
        assert.ok(err instanceof DecodeError, `cut at ${cut}: ${String(err)}`)
        return true
      })
    }
  }
  // Cut exactly after the first frame: a complete stream of one frame.
  assert.equal((await decode('zstd', pieces(two.subarray(0, one.length), 1))).length, 100 * 1024)
})

test('zstd: bytes after a frame that are no frame, and a corrupt block, are refused with DecodeError', async () => {
  const body = await compressed(sample(100 * 1024), 'zstd')
  await assert.rejects(decode('zstd', [Buffer.concat([body, Buffer.from('trailing garbage')])]), DecodeError)
  const corrupt = Buffer.from(body)
  for (let i = 20; i < 200; i++) corrupt[i] = (corrupt[i] ?? 0) ^ 0x5a
  await assert.rejects(decode('zstd', pieces(corrupt, 100)), DecodeError)
})

test('zstd: an error thrown by the sink passes through unchanged, not as a DecodeError', async () => {
  const body = await compressed(sample(400 * 1024), 'zstd')
  const mine = new Error('the NAR reader refused')
  const decoder = createDecoder('zstd', () => { throw mine })
  assert.throws(() => decoder.write(body), (err: unknown) => err === mine)
  decoder.close()
})

test('zstd: decoders interleaved chunk by chunk, and contexts reused after failures, stay independent', async () => {
  const a = sample(600 * 1024)
  const b = sample(500 * 1024)
  const [bodyA, bodyB] = [await compressed(a, 'zstd'), await compressed(b, 'zstd')]
  for (let round = 0; round < 3; round++) {
    // A truncated upload and a corrupt one leave their contexts in the middle of a frame.
    await assert.rejects(decode('zstd', [bodyA.subarray(0, 1000)]), DecodeError)
    await assert.rejects(decode('zstd', [bodyB.subarray(0, 200), Buffer.alloc(300, 0xff)]), DecodeError)
    const [outA, outB] = await decodeInterleaved('zstd', pieces(bodyA, 3000), pieces(bodyB, 5000))
    assert.deepEqual(outA, a)
    assert.deepEqual(outB, b)
  }
})

test('zstdFrameWindow reads the window a frame header declares', async () => {
  // Streaming compression at the default level declares a window of its own.
  const streamed = await compressed(sample(10 * 1024), 'zstd')
  const window = zstdFrameWindow(streamed)
  assert.equal(typeof window, 'number')
  assert.ok((window as number) >= 1024 && (window as number) <= 8 * 1024 * 1024, String(window))
  // One-shot compression of 5000 bytes: single segment, the window is the content size.
  assert.equal(zstdFrameWindow(zstdOneShot(Buffer.alloc(5000, 1))), 5000)
  assert.equal(zstdFrameWindow(zstdOneShot(Buffer.alloc(100, 1))), 100)
  assert.equal(zstdFrameWindow(streamed.subarray(0, 4)), 'more')
  assert.equal(zstdFrameWindow(Buffer.from('not zstd at all')), undefined)
  // Window descriptor 0x88: exponent 17, mantissa 0 → 2^27 = 128 MiB.
  assert.equal(zstdFrameWindow(Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x88])), 128 * 1024 * 1024)
})

for (const method of ['xz', 'gzip', 'bzip2', 'br', 'none'] as const) {
  test(`${method}: 1-byte chunks decode like one chunk; truncation is a DecodeError; sink errors pass through`, async () => {
    const data = sample(300 * 1024)
    // narwhal does not compress with bzip2; the system's bzip2 does.
    const body = method === 'bzip2' ? await compressBytes(data, 'bzip2') : await compressed(data, method)
    assert.deepEqual(await decode(method, [body]), data)
    assert.deepEqual(await decode(method, pieces(body, method === 'bzip2' ? 97 : 1)), data)
    if (method !== 'none') {
      await assert.rejects(decode(method, [body.subarray(0, Math.floor(body.length / 2))]), DecodeError)
    }
    const mine = new Error('the NAR reader refused')
    const decoder = createDecoder(method, () => { throw mine })
    await assert.rejects(async () => {
      for (const chunk of pieces(body, 4096)) await decoder.write(chunk)
      await decoder.end()
    }, (err: unknown) => err === mine)
    decoder.close()
  })
}

test('gzip one-shot agrees with the gzip decoder (an independent check of the adapter)', async () => {
  const data = sample(200 * 1024)
  assert.deepEqual(await decode('gzip', pieces(zlib.gzipSync(data), 10)), data)
})

/** `bytes` zeros compressed by the system's `xz -0` or `bzip2 -1`: a few KB that expand thousands of times. */
async function bomb (method: 'xz' | 'bzip2', bytes: number): Promise<Buffer> {
  const tool = method === 'xz' ? 'xz -0 -T1' : 'bzip2 -1'
  return await runBytes('sh', ['-c', `head -c ${bytes} /dev/zero | ${tool}`])
}

for (const method of ['xz', 'bzip2'] as const) {
  test(`${method}: a bomb (256 MiB of zeros in a few KB) decodes whole, a little at a time, never all in memory at once`, async () => {
    const size = 256 * 1024 * 1024
    const body = await bomb(method, size)
    assert.ok(body.length < 64 * 1024, `the bomb is ${body.length} bytes`)
    const baseline = process.memoryUsage().arrayBuffers
    let delivered = 0
    let largest = 0
    let peak = 0
    const decoder = createDecoder(method, (out) => {
      delivered += out.length
      largest = Math.max(largest, out.length)
      // Buffers held outside the V8 heap: decoded output waiting to be delivered shows up here.
      if ((delivered & 0xfffff) < out.length) peak = Math.max(peak, process.memoryUsage().arrayBuffers - baseline)
    })
    try {
      // The whole bomb in one write, as one chunk of an upload would bring it.
      await decoder.write(body)
      await decoder.end()
    } finally {
      decoder.close()
    }
    assert.equal(delivered, size)
    assert.ok(largest <= 1024 * 1024, `pieces of at most 1 MiB, not ${largest} bytes`)
    assert.ok(peak < 128 * 1024 * 1024, `at most 128 MiB of output held at once (the whole 256 MiB without pieces); peak was ${(peak / 2 ** 20).toFixed(0)} MiB`)
  })
}

test('bzip2: several blocks, two concatenated streams, decoders interleaved chunk by chunk, and garbage', async () => {
  // bzip2 -1 makes 100 kB blocks: 700 kB of sample is several of them.
  const a = sample(700 * 1024)
  const b = sample(300 * 1024)
  const bodyA = await runBytes('bzip2', ['-1', '-c'], a)
  const bodyB = await runBytes('bzip2', ['-1', '-c'], b)
  assert.deepEqual(await decode('bzip2', pieces(bodyA, 5000)), a)
  assert.deepEqual(await decode('bzip2', pieces(Buffer.concat([bodyA, bodyB]), 7000)), Buffer.concat([a, b]))
  // Two uploads at once, each decoder on its own thread, fed a chunk at a time in turns.
  const [outA, outB] = await decodeInterleaved('bzip2', pieces(bodyA, 3000), pieces(bodyB, 3000))
  assert.deepEqual(outA, a)
  assert.deepEqual(outB, b)
  await assert.rejects(decode('bzip2', [Buffer.from('BZh9 this is not bzip2 data at all, only its magic')]), DecodeError)
  await assert.rejects(decode('bzip2', [bodyA.subarray(0, bodyA.length - 10)]), DecodeError)
})

test('bzip2 is decoded off the event loop: other work goes on while a bomb\'s 5 MB blocks decode', async () => {
  const body = await bomb('bzip2', 256 * 1024 * 1024)
  // Turns of the event loop while the decoder works. On the event loop itself it would get one
  // per block (about 50 here, each block 5 MB of output in one go); on a thread the loop turns
  // at least once per 256 KiB delivered.
  let turns = 0
  let decoding = true
  const tick = (): void => { turns++; if (decoding) setImmediate(tick) }
  setImmediate(tick)
  let delivered = 0
  const decoder = createDecoder('bzip2', (out) => { delivered += out.length })
  try {
    await decoder.write(body)
    await decoder.end()
  } finally {
    decoding = false
    decoder.close()
  }
  assert.equal(delivered, 256 * 1024 * 1024)
  assert.ok(turns > 500, `the event loop turned ${turns} times while 256 MiB were decoded`)
})

test(`bzip2: at most ${MAX_BZIP2_THREADS} threads at once; further uploads wait their turn, and one closed while waiting leaves the queue`, async () => {
  const data = sample(300 * 1024)
  const body = await runBytes('bzip2', ['-1', '-c'], data)
  const outputs: Buffer[][] = []
  const decoders = Array.from({ length: MAX_BZIP2_THREADS + 2 }, (_, i) => {
    outputs[i] = []
    return createDecoder('bzip2', chunk => { outputs[i]?.push(Buffer.from(chunk)) })
  })
  try {
    assert.deepEqual(bzip2Threads(), { running: MAX_BZIP2_THREADS, waiting: 2 })
    const settled: boolean[] = decoders.map(() => false)
    const writes = decoders.map(async (decoder, i) => {
      await decoder.write(body)
      await decoder.end()
      settled[i] = true
    })
    // The first ones decode whole; the last two have not started.
    await Promise.all(writes.slice(0, MAX_BZIP2_THREADS))
    await new Promise(resolve => setTimeout(resolve, 100))
    assert.deepEqual(settled, [...Array(MAX_BZIP2_THREADS).fill(true), false, false])
    // Closing a waiting decoder takes it out of the queue, and its write fails instead of hanging.
    const closedWhileWaiting = decoders[MAX_BZIP2_THREADS + 1]
    closedWhileWaiting?.close()
    await assert.rejects(writes[MAX_BZIP2_THREADS + 1] ?? Promise.resolve(), /closed/)
    assert.deepEqual(bzip2Threads(), { running: MAX_BZIP2_THREADS, waiting: 1 })
    // Ending one running decoder lets the first waiting one start and finish.
    decoders[0]?.close()
    await writes[MAX_BZIP2_THREADS]
    assert.deepEqual(Buffer.concat(outputs[MAX_BZIP2_THREADS] ?? []), data)
  } finally {
    // Also after a failed assertion: a thread left running would keep the test process alive.
    for (const decoder of decoders) decoder.close()
  }
  assert.deepEqual(bzip2Threads(), { running: 0, waiting: 0 })
})
