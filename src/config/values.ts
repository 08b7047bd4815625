/**
 * Checks of configuration values shared by the server's configuration (config.ts) and the
 * pusher's (pusher/config.ts), so both refuse a bad value with the same words, naming its key.
 */

export class ConfigError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'ConfigError'
  }
}

export function isRecord (v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

export function expectInteger (v: unknown, key: string, min: number): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) {
    throw new ConfigError(`${key}: expected an integer >= ${min}, got ${JSON.stringify(v)}`)
  }
  return v
}

export function expectString (v: unknown, key: string): string {
  if (typeof v !== 'string' || v === '') throw new ConfigError(`${key}: expected a non-empty string, got ${JSON.stringify(v)}`)
  return v
}

export function expectStrings (v: unknown, key: string): string[] {
  if (!Array.isArray(v)) throw new ConfigError(`${key}: expected an array of strings`)
  return v.map((s, i) => expectString(s, `${key}[${i}]`))
}

/** `where` prefixes the key in the message: '' at the top of a file, 'limits.' inside a section. */
export function rejectUnknown (obj: Record<string, unknown>, known: readonly string[], where: string): void {
  for (const key of Object.keys(obj)) {
    if (!known.includes(key)) throw new ConfigError(`${where}${key}: unknown setting (known: ${known.join(', ')})`)
  }
}

/** A list in one environment variable: words separated by white space. */
export function splitWords (value: string): string[] {
  return value.split(/\s+/).filter(w => w !== '')
}
