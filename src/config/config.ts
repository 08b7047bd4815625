/**
 * Server configuration: typed defaults, then an optional JSON file, then `NARWHAL_*` environment
 * variables, then command-line flags. Loaded and validated once; unknown keys and bad values stop
 * the start with a message naming the key. The result is frozen and passed in, never global.
 */
import { readFileSync } from 'node:fs'
import path from 'node:path'
import { DURATION_HELP, parseDuration, parseSize, SIZE_HELP } from './units.js'

export interface Limits {
  /** Largest NAR file accepted, in bytes. Default 64 GiB: Nix NARs of several GiB are common. */
  narBytes: number
  /** Largest narinfo accepted. Real ones are under 2 KiB; 64 KiB leaves room for many Sig lines. */
  narinfoBytes: number
  /** Largest build log (as sent, possibly compressed). */
  logBytes: number
  /** Largest `.ls` listing; a NAR with many files has a long one. */
  listingBytes: number
  /** Largest realisation, debuginfo link or nix-cache-info. */
  smallFileBytes: number
  /** Free disk space a NAR upload must leave behind; below it uploads get 507 and reads go on. */
  freeSpaceReserveBytes: number
}

/** Garbage collection (`narwhal gc`, and the schedule `narwhal serve` runs). Times in ms. */
export interface GcSettings {
  /** Evict least recently used paths until the NAR files take at most this many bytes; null: no limit. */
  maxSize: number | null
  /** Evict paths not used for this long; null: no age limit. */
  olderThan: number | null
  /** `narwhal serve` collects this often; null: never (only `narwhal gc` does). */
  interval: number | null
  /** NAR files no narinfo names are removed once they are this old (Nix uploads a NAR before its narinfo). */
  unnamedNarGrace: number
  /** maxSize never evicts a path used this recently: a push or a substitution may be under way. */
  keepRecent: number
}

export interface Config {
  /** Folder holding the database, the NAR files and generated keys. */
  dataDir: string
  listen: { host: string, port: number }
  /** Public keys (`name:base64`) whose signatures make an upload acceptable. */
  trustedKeys: string[]
  /** `Priority` in nix-cache-info. Lower is tried first; cache.nixos.org uses 40. */
  priority: number
  /** When true, reads need a token with read scope as well. */
  private: boolean
  logLevel: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent'
  limits: Limits
  gc: GcSettings
}

export function defaultConfig (): Config {
  return {
    dataDir: './data',
    listen: { host: '127.0.0.1', port: 5000 },
    trustedKeys: [],
    // 30: consulted before cache.nixos.org (40), so a team's own builds win when both have a path.
    priority: 30,
    private: false,
    logLevel: 'info',
    limits: {
      narBytes: 64 * 1024 ** 3,
      narinfoBytes: 64 * 1024,
      logBytes: 64 * 1024 ** 2,
      listingBytes: 64 * 1024 ** 2,
      smallFileBytes: 64 * 1024,
      // 1 GiB: room for SQLite's WAL and the logs, so a full disk never stops the cache serving.
      freeSpaceReserveBytes: 1024 ** 3
    },
    gc: {
      maxSize: null,
      olderThan: null,
      // Hourly: with no maxSize or olderThan set, a run only removes NAR files that no narinfo
      // named within unnamedNarGrace (uploads that were never completed).
      interval: 3_600_000,
      unnamedNarGrace: 86_400_000,
      keepRecent: 3_600_000
    }
  }
}

export class ConfigError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'ConfigError'
  }
}

/** The settings that may come from flags; undefined means "not given". */
export interface ConfigOverrides {
  configFile?: string | undefined
  dataDir?: string | undefined
  listen?: string | undefined
  trustedKeys?: string[] | undefined
}

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const

export function parseListen (value: string, key: string): { host: string, port: number } {
  const match = /^(\[[0-9a-fA-F:.]+\]|[^:\s]+):(\d{1,5})$/.exec(value)
  const port = Number(match?.[2])
  if (match === null || !Number.isInteger(port) || port > 65535) {
    throw new ConfigError(`${key}: expected HOST:PORT (for example 127.0.0.1:5000), got ${JSON.stringify(value)}`)
  }
  const host = (match[1] ?? '').replace(/^\[(.*)\]$/, '$1')
  return { host, port }
}

function isRecord (v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

function expectInteger (v: unknown, key: string, min: number): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) {
    throw new ConfigError(`${key}: expected an integer >= ${min}, got ${JSON.stringify(v)}`)
  }
  return v
}

function expectString (v: unknown, key: string): string {
  if (typeof v !== 'string' || v === '') throw new ConfigError(`${key}: expected a non-empty string, got ${JSON.stringify(v)}`)
  return v
}

function expectSize (v: unknown, key: string): number {
  const bytes = typeof v === 'number' ? (Number.isSafeInteger(v) && v >= 0 ? v : undefined) : typeof v === 'string' ? parseSize(v) : undefined
  if (bytes === undefined) throw new ConfigError(`${key}: expected ${SIZE_HELP}, got ${JSON.stringify(v)}`)
  return bytes
}

function expectDuration (v: unknown, key: string): number {
  const ms = typeof v === 'string' ? parseDuration(v) : undefined
  if (ms === undefined) throw new ConfigError(`${key}: expected ${DURATION_HELP}, got ${JSON.stringify(v)}`)
  return ms
}

/** "off" (or null in a JSON file) turns a setting off. */
function isOff (v: unknown): boolean {
  return v === null || v === 'off'
}

const GC_KEYS = ['maxSize', 'olderThan', 'interval', 'unnamedNarGrace', 'keepRecent'] as const
type GcKey = typeof GC_KEYS[number]

/** Sets one gc setting from a file value or an environment string; `key` names it in errors. */
function applyGcSetting (gc: GcSettings, name: GcKey, v: unknown, key: string): void {
  switch (name) {
    case 'maxSize':
      gc.maxSize = isOff(v) ? null : expectSize(v, key)
      break
    case 'olderThan':
      gc.olderThan = isOff(v) ? null : expectDuration(v, key)
      break
    case 'interval': {
      const ms = isOff(v) ? null : expectDuration(v, key)
      if (ms === 0) throw new ConfigError(`${key}: must be longer than 0 (use "off" to turn the schedule off)`)
      gc.interval = ms
      break
    }
    case 'unnamedNarGrace':
      gc.unnamedNarGrace = expectDuration(v, key)
      break
    case 'keepRecent':
      gc.keepRecent = expectDuration(v, key)
      break
  }
}

function rejectUnknown (obj: Record<string, unknown>, known: string[], where: string): void {
  for (const key of Object.keys(obj)) {
    if (!known.includes(key)) throw new ConfigError(`${where}${key}: unknown setting (known: ${known.join(', ')})`)
  }
}

/** Applies a parsed JSON config file onto `config`, validating every key. */
function applyFile (config: Config, raw: unknown, file: string): void {
  if (!isRecord(raw)) throw new ConfigError(`${file}: expected a JSON object`)
  rejectUnknown(raw, ['dataDir', 'listen', 'trustedKeys', 'priority', 'private', 'logLevel', 'limits', 'gc'], '')
  if (raw.dataDir !== undefined) config.dataDir = path.resolve(path.dirname(file), expectString(raw.dataDir, 'dataDir'))
  if (raw.listen !== undefined) config.listen = parseListen(expectString(raw.listen, 'listen'), 'listen')
  if (raw.trustedKeys !== undefined) {
    if (!Array.isArray(raw.trustedKeys)) throw new ConfigError('trustedKeys: expected an array of "name:base64" strings')
    config.trustedKeys = raw.trustedKeys.map((k, i) => expectString(k, `trustedKeys[${i}]`))
  }
  if (raw.priority !== undefined) config.priority = expectInteger(raw.priority, 'priority', 0)
  if (raw.private !== undefined) {
    if (typeof raw.private !== 'boolean') throw new ConfigError('private: expected true or false')
    config.private = raw.private
  }
  if (raw.logLevel !== undefined) config.logLevel = expectLogLevel(raw.logLevel, 'logLevel')
  if (raw.limits !== undefined) {
    if (!isRecord(raw.limits)) throw new ConfigError('limits: expected an object')
    const known = Object.keys(config.limits)
    rejectUnknown(raw.limits, known, 'limits.')
    for (const key of known as Array<keyof Limits>) {
      if (raw.limits[key] !== undefined) config.limits[key] = expectInteger(raw.limits[key], `limits.${key}`, key === 'freeSpaceReserveBytes' ? 0 : 1)
    }
  }
  if (raw.gc !== undefined) {
    if (!isRecord(raw.gc)) throw new ConfigError('gc: expected an object')
    rejectUnknown(raw.gc, [...GC_KEYS], 'gc.')
    for (const key of GC_KEYS) {
      if (raw.gc[key] !== undefined) applyGcSetting(config.gc, key, raw.gc[key], `gc.${key}`)
    }
  }
}

/** NARWHAL_GC_MAX_SIZE, NARWHAL_GC_OLDER_THAN, …: the gc keys in upper snake case. */
function gcEnvName (key: GcKey): string {
  return 'NARWHAL_GC_' + key.replace(/[A-Z]/g, c => '_' + c).toUpperCase()
}

function expectLogLevel (v: unknown, key: string): Config['logLevel'] {
  const level = LOG_LEVELS.find(l => l === v)
  if (level === undefined) throw new ConfigError(`${key}: expected one of ${LOG_LEVELS.join(', ')}, got ${JSON.stringify(v)}`)
  return level
}

/** Reads and parses a JSON config file; the errors name the file and say what is wrong. */
export function readJsonConfigFile (file: string): unknown {
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch (err) {
    throw new ConfigError(`config file ${file}: cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'})`)
  }
  try {
    return JSON.parse(text)
  } catch (err) {
    throw new ConfigError(`config file ${file}: not valid JSON (${(err as Error).message})`)
  }
}

function splitKeys (value: string): string[] {
  return value.split(/\s+/).filter(k => k !== '')
}

export function loadConfig (overrides: ConfigOverrides = {}, env: NodeJS.ProcessEnv = process.env): Readonly<Config> {
  const config = defaultConfig()
  const file = overrides.configFile ?? env.NARWHAL_CONFIG
  if (file !== undefined && file !== '') applyFile(config, readJsonConfigFile(file), path.resolve(file))
  if (env.NARWHAL_DATA !== undefined && env.NARWHAL_DATA !== '') config.dataDir = env.NARWHAL_DATA
  if (env.NARWHAL_LISTEN !== undefined && env.NARWHAL_LISTEN !== '') config.listen = parseListen(env.NARWHAL_LISTEN, 'NARWHAL_LISTEN')
  if (env.NARWHAL_TRUSTED_KEYS !== undefined && env.NARWHAL_TRUSTED_KEYS.trim() !== '') config.trustedKeys = splitKeys(env.NARWHAL_TRUSTED_KEYS)
  if (env.NARWHAL_PRIORITY !== undefined && env.NARWHAL_PRIORITY !== '') {
    config.priority = expectInteger(Number(env.NARWHAL_PRIORITY), 'NARWHAL_PRIORITY', 0)
  }
  if (env.NARWHAL_PRIVATE !== undefined && env.NARWHAL_PRIVATE !== '') {
    if (!['true', 'false', '1', '0'].includes(env.NARWHAL_PRIVATE)) throw new ConfigError('NARWHAL_PRIVATE: expected true or false')
    config.private = env.NARWHAL_PRIVATE === 'true' || env.NARWHAL_PRIVATE === '1'
  }
  if (env.NARWHAL_LOG_LEVEL !== undefined && env.NARWHAL_LOG_LEVEL !== '') config.logLevel = expectLogLevel(env.NARWHAL_LOG_LEVEL, 'NARWHAL_LOG_LEVEL')
  for (const key of GC_KEYS) {
    const value = env[gcEnvName(key)]
    if (value !== undefined && value !== '') applyGcSetting(config.gc, key, value, gcEnvName(key))
  }
  if (overrides.dataDir !== undefined) config.dataDir = overrides.dataDir
  if (overrides.listen !== undefined) config.listen = parseListen(overrides.listen, '--listen')
  if (overrides.trustedKeys !== undefined && overrides.trustedKeys.length > 0) config.trustedKeys = overrides.trustedKeys
  config.dataDir = path.resolve(config.dataDir)
  return Object.freeze(config)
}
