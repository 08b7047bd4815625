/**
 * Server configuration: typed defaults, then an optional JSON file, then `NARWHAL_*` environment
 * variables, then command-line flags. Loaded and validated once; unknown keys and bad values stop
 * the start with a message naming the key. The result is frozen and passed in, never global.
 */
import { readFileSync } from 'node:fs'
import { isIP } from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { DURATION_HELP, parseDuration, parseSize, SIZE_HELP } from './units.js'
import { upstreamsFromFile, upstreamsFromList, type UpstreamConfig } from './upstreams.js'
import { ConfigError, expectInteger, expectString, isRecord, rejectUnknown, splitWords } from './values.js'

export { ConfigError }

export interface Limits {
  /** Largest NAR file accepted, in bytes. Default 64 GiB: Nix NARs of several GiB are common. */
  narBytes: number
  /**
   * Largest NAR accepted once decompressed (its NarSize), in bytes. narBytes bounds only what
   * the client sends; without this a few KiB of zstd or xz that decompress to terabytes would
   * have the server decompress, parse and hash without end.
   */
  narSizeBytes: number
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

/**
 * Per-client request budgets. A client is its token when it presents a valid one, else its
 * address (an IPv6 address by its /64, which one machine usually holds whole). The counters
 * live in this process's memory.
 */
export interface RateLimit {
  enabled: boolean
  /**
   * Length of one counting window. Nix retries a 429 only four times, over about 4 s, and ignores
   * Retry-After, so a window longer than ~3 s turns a throttled Nix client into a failed one.
   */
  windowSeconds: number
  /** GET/HEAD requests per client per window; 0 means unlimited. */
  reads: number
  /** PUT/POST requests per client per window; 0 means unlimited. */
  writes: number
  /** 401 answers per address per window before further bad credentials get 429; 0 means unlimited. */
  failedAuth: number
}

/** Time limits on a connection; none of them bounds a whole transfer, which may take hours. */
export interface Timeouts {
  /** A socket with no byte moving in either direction for this long is closed. */
  idleSeconds: number
  /** A request must have sent all its headers within this long (slowloris). */
  headersSeconds: number
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
  rateLimit: RateLimit
  timeouts: Timeouts
  /**
   * Addresses (IP, CIDR, or loopback/linklocal/uniquelocal) of reverse proxies whose
   * X-Forwarded-For names the client. Empty: the client is the TCP peer.
   */
  trustProxy: string[]
  gc: GcSettings
  /**
   * Server processes sharing the port (node:cluster, see cli/cluster.ts). 1 is one process and
   * no cluster at all, as narwhal always ran.
   */
  workers: number
  /** Caches to pull through from, in the order they are asked (config/upstreams.ts). */
  upstreams: UpstreamConfig[]
  /** The audit log of writes and refusals (cache/audit-log.ts). */
  audit: AuditSettings
}

export interface AuditSettings {
  /** The log keeps its newest this many entries; older ones are deleted (about 300 bytes each on disk). */
  maxEntries: number
}

/**
 * The most processes `workers: "auto"` starts, whatever the core count: each worker is a whole
 * V8 heap (60-80 MiB here), and every write still goes through SQLite's one writer, so past a
 * handful of workers memory grows while request rates stop growing.
 */
export const MAX_AUTO_WORKERS = 8

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
      // 256 GiB, four times narBytes: NARs of several GiB are common, and even compressed as
      // well as store paths often are (hello 2.10 on cache.nixos.org: 5x with xz) a NAR fits
      // unless its file is above about 50 GiB. An upload then costs at most this much
      // decompressing, parsing and hashing, about 13 minutes of one core here (2.8 ms per MB,
      // BENCHMARKS.md), where a bomb's cost had no bound at all.
      narSizeBytes: 256 * 1024 ** 3,
      narinfoBytes: 64 * 1024,
      logBytes: 64 * 1024 ** 2,
      listingBytes: 64 * 1024 ** 2,
      smallFileBytes: 64 * 1024,
      // 1 GiB: room for SQLite's WAL and the logs, so a full disk never stops the cache serving.
      freeSpaceReserveBytes: 1024 ** 3
    },
    rateLimit: {
      enabled: true,
      // Short, so that Nix's retries (about 0.3, 0.9, 2 and 4.5 s after a 429) reach a fresh window.
      windowSeconds: 1,
      // Off: one `nix copy --from` of 2,000 paths makes ~2,000 reads/s here, a team behind one
      // NAT address several times that, and Nix fails a substitution whose retries do not fit in
      // the budget (200/s failed such a copy, 1,000/s did not).
      reads: 0,
      // Off: pushing is done by trusted builders with tokens; a budget is for caches where that is
      // not so. Nix 2.8 does get through one (the 429 is answered before `100 Continue`, so its
      // retry still has the body), within the ~4.6 s its retries span.
      writes: 0,
      // Per address: a scanner trying tokens gets 429 instead of a 401 log line per guess.
      failedAuth: 30
    },
    timeouts: {
      // Longer than any pause of a moving transfer (a client compressing its next chunk), short
      // enough that dead and stalled clients do not hold sockets and temp files for long.
      idleSeconds: 60,
      headersSeconds: 30
    },
    trustProxy: [],
    gc: {
      maxSize: null,
      olderThan: null,
      // Hourly: with no maxSize or olderThan set, a run only removes NAR files that no narinfo
      // named within unnamedNarGrace (uploads that were never completed).
      interval: 3_600_000,
      unnamedNarGrace: 86_400_000,
      keepRecent: 3_600_000
    },
    // One process unless asked: more cost memory (a V8 heap each) and change nothing for a small team.
    workers: 1,
    upstreams: [],
    // About 300 MB of database at most (313 bytes an entry; BENCHMARKS.md).
    audit: { maxEntries: 1_000_000 }
  }
}

/** The settings that may come from flags; undefined means "not given". */
export interface ConfigOverrides {
  configFile?: string | undefined
  dataDir?: string | undefined
  listen?: string | undefined
  trustedKeys?: string[] | undefined
  workers?: string | undefined
  upstreams?: string[] | undefined
  upstreamKeys?: string[] | undefined
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

/**
 * A positive integer, or "auto": one per core (os.availableParallelism()), at most
 * MAX_AUTO_WORKERS. Environment and flag values are text (`fromText`); a JSON file gives a
 * number or "auto", and other text there is refused.
 */
function expectWorkers (v: unknown, key: string, fromText = true): number {
  if (v === 'auto') return Math.min(os.availableParallelism(), MAX_AUTO_WORKERS)
  const n = fromText && typeof v === 'string' && /^\d+$/.test(v) ? Number(v) : v
  if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 1) {
    throw new ConfigError(`${key}: expected a positive integer or "auto", got ${JSON.stringify(v)}`)
  }
  return n
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

/** Applies a parsed JSON config file onto `config`, validating every key. */
function applyFile (config: Config, raw: unknown, file: string): void {
  if (!isRecord(raw)) throw new ConfigError(`${file}: expected a JSON object`)
  rejectUnknown(raw, ['dataDir', 'listen', 'trustedKeys', 'priority', 'private', 'logLevel', 'limits', 'rateLimit', 'timeouts', 'trustProxy', 'gc', 'workers', 'audit', 'upstreams'], '')
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
  if (raw.rateLimit !== undefined) {
    if (!isRecord(raw.rateLimit)) throw new ConfigError('rateLimit: expected an object')
    rejectUnknown(raw.rateLimit, Object.keys(config.rateLimit), 'rateLimit.')
    const r = raw.rateLimit
    if (r.enabled !== undefined) {
      if (typeof r.enabled !== 'boolean') throw new ConfigError('rateLimit.enabled: expected true or false')
      config.rateLimit.enabled = r.enabled
    }
    if (r.windowSeconds !== undefined) config.rateLimit.windowSeconds = expectWindow(r.windowSeconds, 'rateLimit.windowSeconds')
    for (const key of ['reads', 'writes', 'failedAuth'] as const) {
      if (r[key] !== undefined) config.rateLimit[key] = expectInteger(r[key], `rateLimit.${key}`, 0)
    }
  }
  if (raw.timeouts !== undefined) {
    if (!isRecord(raw.timeouts)) throw new ConfigError('timeouts: expected an object')
    const known = Object.keys(config.timeouts)
    rejectUnknown(raw.timeouts, known, 'timeouts.')
    for (const key of known as Array<keyof Timeouts>) {
      if (raw.timeouts[key] !== undefined) config.timeouts[key] = expectInteger(raw.timeouts[key], `timeouts.${key}`, 1)
    }
  }
  if (raw.trustProxy !== undefined) {
    if (!Array.isArray(raw.trustProxy)) throw new ConfigError('trustProxy: expected an array of addresses or CIDR ranges')
    config.trustProxy = raw.trustProxy.map((v, i) => expectProxyAddress(v, `trustProxy[${i}]`))
  }
  if (raw.gc !== undefined) {
    if (!isRecord(raw.gc)) throw new ConfigError('gc: expected an object')
    rejectUnknown(raw.gc, [...GC_KEYS], 'gc.')
    for (const key of GC_KEYS) {
      if (raw.gc[key] !== undefined) applyGcSetting(config.gc, key, raw.gc[key], `gc.${key}`)
    }
  }
  if (raw.workers !== undefined) config.workers = expectWorkers(raw.workers, 'workers', false)
  if (raw.upstreams !== undefined) config.upstreams = upstreamsFromFile(raw.upstreams)
  if (raw.audit !== undefined) {
    if (!isRecord(raw.audit)) throw new ConfigError('audit: expected an object')
    rejectUnknown(raw.audit, ['maxEntries'], 'audit.')
    if (raw.audit.maxEntries !== undefined) config.audit.maxEntries = expectInteger(raw.audit.maxEntries, 'audit.maxEntries', 1)
  }
}

/** Windows are whole seconds, at most an hour: longer ones are bans, not rate limits. */
function expectWindow (v: unknown, key: string): number {
  const seconds = expectInteger(v, key, 1)
  if (seconds > 3600) throw new ConfigError(`${key}: expected at most 3600 seconds, got ${seconds}`)
  return seconds
}

const PROXY_KEYWORDS = ['loopback', 'linklocal', 'uniquelocal']

/**
 * An address, a CIDR range or one of proxy-addr's names. `true` (trust every hop) is not
 * offered: it would let any client choose the address it is counted under.
 */
function expectProxyAddress (v: unknown, key: string): string {
  const text = expectString(v, key)
  if (PROXY_KEYWORDS.includes(text)) return text
  const [address = '', prefix, ...rest] = text.split('/')
  const family = isIP(address)
  const bits = family === 6 ? 128 : 32
  const prefixOk = prefix === undefined || (/^\d{1,3}$/.test(prefix) && Number(prefix) <= bits)
  if (family === 0 || !prefixOk || rest.length > 0) {
    throw new ConfigError(`${key}: expected an IP address, a CIDR range (10.0.0.0/8) or one of ${PROXY_KEYWORDS.join(', ')}, got ${JSON.stringify(text)}`)
  }
  return text
}

function expectBoolean (v: string, key: string): boolean {
  if (!['true', 'false', '1', '0'].includes(v)) throw new ConfigError(`${key}: expected true or false`)
  return v === 'true' || v === '1'
}

/** The NARWHAL_* variables of the rateLimit, timeouts and trustProxy settings. */
function applyProtectionEnv (config: Config, env: NodeJS.ProcessEnv): void {
  const given = (name: string): string | undefined => env[name] !== undefined && env[name] !== '' ? env[name] : undefined
  const integer = (name: string, min: number): number | undefined => {
    const value = given(name)
    return value === undefined ? undefined : expectInteger(Number(value), name, min)
  }
  const enabled = given('NARWHAL_RATE_LIMIT')
  if (enabled !== undefined) config.rateLimit.enabled = expectBoolean(enabled, 'NARWHAL_RATE_LIMIT')
  const window = given('NARWHAL_RATE_LIMIT_WINDOW_SECONDS')
  if (window !== undefined) config.rateLimit.windowSeconds = expectWindow(Number(window), 'NARWHAL_RATE_LIMIT_WINDOW_SECONDS')
  config.rateLimit.reads = integer('NARWHAL_RATE_LIMIT_READS', 0) ?? config.rateLimit.reads
  config.rateLimit.writes = integer('NARWHAL_RATE_LIMIT_WRITES', 0) ?? config.rateLimit.writes
  config.rateLimit.failedAuth = integer('NARWHAL_RATE_LIMIT_FAILED_AUTH', 0) ?? config.rateLimit.failedAuth
  config.timeouts.idleSeconds = integer('NARWHAL_IDLE_TIMEOUT_SECONDS', 1) ?? config.timeouts.idleSeconds
  config.timeouts.headersSeconds = integer('NARWHAL_HEADERS_TIMEOUT_SECONDS', 1) ?? config.timeouts.headersSeconds
  const proxies = given('NARWHAL_TRUST_PROXY')
  if (proxies !== undefined) config.trustProxy = splitWords(proxies.replaceAll(',', ' ')).map(p => expectProxyAddress(p, 'NARWHAL_TRUST_PROXY'))
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

export function loadConfig (overrides: ConfigOverrides = {}, env: NodeJS.ProcessEnv = process.env): Readonly<Config> {
  const config = defaultConfig()
  const file = overrides.configFile ?? env.NARWHAL_CONFIG
  if (file !== undefined && file !== '') applyFile(config, readJsonConfigFile(file), path.resolve(file))
  if (env.NARWHAL_DATA !== undefined && env.NARWHAL_DATA !== '') config.dataDir = env.NARWHAL_DATA
  if (env.NARWHAL_LISTEN !== undefined && env.NARWHAL_LISTEN !== '') config.listen = parseListen(env.NARWHAL_LISTEN, 'NARWHAL_LISTEN')
  if (env.NARWHAL_TRUSTED_KEYS !== undefined && env.NARWHAL_TRUSTED_KEYS.trim() !== '') config.trustedKeys = splitWords(env.NARWHAL_TRUSTED_KEYS)
  if (env.NARWHAL_PRIORITY !== undefined && env.NARWHAL_PRIORITY !== '') {
    config.priority = expectInteger(Number(env.NARWHAL_PRIORITY), 'NARWHAL_PRIORITY', 0)
  }
  if (env.NARWHAL_PRIVATE !== undefined && env.NARWHAL_PRIVATE !== '') config.private = expectBoolean(env.NARWHAL_PRIVATE, 'NARWHAL_PRIVATE')
  if (env.NARWHAL_LOG_LEVEL !== undefined && env.NARWHAL_LOG_LEVEL !== '') config.logLevel = expectLogLevel(env.NARWHAL_LOG_LEVEL, 'NARWHAL_LOG_LEVEL')
  applyProtectionEnv(config, env)
  for (const key of GC_KEYS) {
    const value = env[gcEnvName(key)]
    if (value !== undefined && value !== '') applyGcSetting(config.gc, key, value, gcEnvName(key))
  }
  if (env.NARWHAL_AUDIT_MAX_ENTRIES !== undefined && env.NARWHAL_AUDIT_MAX_ENTRIES !== '') {
    config.audit.maxEntries = expectInteger(Number(env.NARWHAL_AUDIT_MAX_ENTRIES), 'NARWHAL_AUDIT_MAX_ENTRIES', 1)
  }
  if (env.NARWHAL_WORKERS !== undefined && env.NARWHAL_WORKERS !== '') config.workers = expectWorkers(env.NARWHAL_WORKERS, 'NARWHAL_WORKERS')
  const envUpstreams = upstreamsFromList(splitWords(env.NARWHAL_UPSTREAMS ?? ''), splitWords(env.NARWHAL_UPSTREAM_KEYS ?? ''),
    'NARWHAL_UPSTREAMS', 'NARWHAL_UPSTREAM_KEYS')
  if (envUpstreams.length > 0) config.upstreams = envUpstreams
  const flagUpstreams = upstreamsFromList(overrides.upstreams ?? [], overrides.upstreamKeys ?? [], '--upstream', '--upstream-key')
  if (flagUpstreams.length > 0) config.upstreams = flagUpstreams
  if (overrides.dataDir !== undefined) config.dataDir = overrides.dataDir
  if (overrides.listen !== undefined) config.listen = parseListen(overrides.listen, '--listen')
  if (overrides.trustedKeys !== undefined && overrides.trustedKeys.length > 0) config.trustedKeys = overrides.trustedKeys
  if (overrides.workers !== undefined) config.workers = expectWorkers(overrides.workers, '--workers')
  config.dataDir = path.resolve(config.dataDir)
  return Object.freeze(config)
}
