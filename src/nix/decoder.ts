/**
 * What every decoder of nix/codecs.ts is: a decompressor that hands its output to a callback
 * (the upload path's hashes and NAR reader), and the error it reports bad input with.
 */

/**
 * Thrown (or rejected with) by a Decoder when its input is not valid data of its method, truncated
 * included. The caller turns it into a refusal naming the method; any other error passes through.
 */
export class DecodeError extends Error {}

/**
 * Receives decompressed bytes. A synchronous decoder reuses the buffer once this returns. If it
 * throws, the decoder stops delivering: its write() or end() throws (or rejects with) that same
 * error, which is how a caller refuses output it will not take (a NAR over limits.narSizeBytes).
 */
export type DecodeSink = (output: Buffer) => void

export interface Decoder {
  /**
   * Decompresses `chunk` and hands the output to the sink. Returns undefined when everything was
   * delivered before returning (zstd and uncompressed, nearly always); otherwise a promise to wait
   * on before the next write (backpressure, or a zstd chunk that expands past 8 MiB), the output
   * being delivered as it comes.
   */
  write: (chunk: Buffer) => Promise<void> | undefined
  /** The input is complete. Throws or rejects with a DecodeError if it stopped inside compressed data. */
  end: () => Promise<void> | undefined
  /** Releases the decompressor, after success or failure. */
  close: () => void
}
