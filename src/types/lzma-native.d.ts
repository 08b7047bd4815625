/** The part of lzma-native (liblzma bindings, no bundled types) that narwhal uses. */
declare module 'lzma-native' {
  import type { Transform } from 'node:stream'
  export interface StreamOptions { preset?: number, threads?: number, memlimit?: number, check?: number }
  export function createDecompressor (options?: StreamOptions): Transform
  export function createCompressor (options?: StreamOptions): Transform
  const lzma: { createDecompressor: typeof createDecompressor, createCompressor: typeof createCompressor, PRESET_EXTREME: number }
  export default lzma
}
