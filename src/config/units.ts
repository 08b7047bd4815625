/**
 * Sizes and durations as people write them in configuration and on the command line:
 * `500M`, `20G`, `1T` or plain bytes; `90m`, `12h`, `30d`. Pure; callers turn `undefined` into an
 * error that names their setting.
 *
 * Size suffixes are binary (K = 1024 bytes, M = 1024 K, …), like df -h and du -h show them.
 */

const SIZE_FACTORS: Record<string, number> = { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4 }
const DURATION_FACTORS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 7 * 86_400_000 }

export const SIZE_HELP = 'a size like 500M, 20G, 1T (binary units) or a number of bytes'
export const DURATION_HELP = 'a duration like 90m, 12h, 30d (s, m, h, d or w)'

/** Bytes, or undefined when `text` is not a size. */
export function parseSize (text: string): number | undefined {
  const match = /^(\d+(?:\.\d+)?)(?:([KMGT])(?:i?B)?|B?)$/i.exec(text.trim())
  if (match === null) return undefined
  const bytes = Math.floor(Number(match[1]) * (SIZE_FACTORS[(match[2] ?? '').toUpperCase()] ?? 1))
  return Number.isSafeInteger(bytes) ? bytes : undefined
}

/** Milliseconds, or undefined when `text` is not a duration. "0" is zero. */
export function parseDuration (text: string): number | undefined {
  const trimmed = text.trim()
  if (trimmed === '0') return 0
  const match = /^(\d+)([smhdw])$/.exec(trimmed)
  if (match === null) return undefined
  const ms = Number(match[1]) * (DURATION_FACTORS[match[2] ?? ''] ?? 1)
  return Number.isSafeInteger(ms) ? ms : undefined
}

/** `1.5 GiB`, for messages; exact byte counts are printed next to it where they matter. */
export function formatBytes (bytes: number): string {
  const units = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB']
  let value = bytes
  let unit = 0
  while (Math.abs(value) >= 1024 && unit < units.length - 1) {
    value /= 1024
    unit++
  }
  return unit === 0 ? `${bytes} bytes` : `${value.toFixed(1)} ${units[unit] ?? ''}`
}
