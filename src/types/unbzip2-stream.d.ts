/** The bit reader unbzip2-stream's block decoder reads from (nix/bzip2-decoder.ts). */
declare module 'unbzip2-stream/lib/bit_iterator.js' {
  export interface BitReader {
    /** Reads n bits (null: skips to the next byte boundary). */
    (n: number | null): number
    /** Bytes begun so far. */
    bytesRead: number
  }
  /** Reads across the buffers `next` returns, asking for the next one when one is used up. */
  function bitIterator (next: () => Buffer | undefined): BitReader
  export default bitIterator
}

/** unbzip2-stream's block decoder (a port of micro-bunzip). */
declare module 'unbzip2-stream/lib/bzip2.js' {
  import type { BitReader } from 'unbzip2-stream/lib/bit_iterator.js'
  const bzip2: {
    /** Reads a stream header; returns its block size, 1-9 (hundreds of kB). */
    header: (bits: BitReader) => number
    /**
     * Decodes one block, calling `output` for each byte; returns the stream's running CRC, or null
     * at the stream's end marker. Throws on corrupt data.
     */
    decompress: (bits: BitReader, output: (byte: number) => void, table: Int32Array, tableSize: number, streamCrc: number) => number | null
  }
  export default bzip2
}
