/**
 * The configuration's error and the small helpers its loaders share (settings.ts, upstreams.ts).
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

/** A list in one environment variable: words separated by white space. */
export function splitWords (value: string): string[] {
  return value.split(/\s+/).filter(w => w !== '')
}
