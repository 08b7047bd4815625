/**
 * Server configuration, declared once in `configSchema` (settings.ts says how): defaults, then an
 * optional JSON file, then `NARWHAL_*` environment variables, then command-line flags. Loaded and
 * validated once; unknown keys and bad values stop the start with a message naming the key, its
 * source and the reason. The result is frozen and passed in, never global.
 */
import { isIP } from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { Type, type StaticDecode } from '@sinclair/typebox'
import { decoded, invalid, loadSettings, o, settingsOf, type Flags, type SettingOptions } from './settings.js'
import { DURATION_HELP, parseDuration, parseSize, SIZE_HELP } from './units.js'
import { upstreamSchema, upstreamsFromList, type UpstreamConfig } from './upstreams.js'
import { ConfigError, splitWords } from './values.js'

export { ConfigError }

/**
 * The most processes `workers: "auto"` starts, whatever the core count: each worker is a whole
 * V8 heap (60-80 MiB here), and every write still goes through SQLite's one writer, so past a
 * handful of workers memory grows while request rates stop growing.
 */
export const MAX_AUTO_WORKERS = 8

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const
const PROXY_KEYWORDS = ['loopback', 'linklocal', 'uniquelocal']

function integer (min: number, description: string, options: SettingOptions & { default?: number, maximum?: number } = {}) {
  return Type.Integer(o(description, { minimum: min, ...options }))
}

function parseListen (value: string): { host: string, port: number } {
  const match = /^(\[[0-9a-fA-F:.]+\]|[^:\s]+):(\d{1,5})$/.exec(value)
  const port = Number(match?.[2])
  if (match === null || !Number.isInteger(port) || port > 65535) invalid('expected HOST:PORT (for example 127.0.0.1:5000)')
  return { host: (match[1] ?? '').replace(/^\[(.*)\]$/, '$1'), port }
}

/**
 * An address, a CIDR range or one of proxy-addr's names. `true` (trust every hop) is not
 * offered: it would let any client choose the address it is counted under.
 */
function proxyAddress (text: string): string {
  if (PROXY_KEYWORDS.includes(text)) return text
  const [address = '', prefix, ...rest] = text.split('/')
  const family = isIP(address)
  const bits = family === 6 ? 128 : 32
  const prefixOk = prefix === undefined || (/^\d{1,3}$/.test(prefix) && Number(prefix) <= bits)
  if (family === 0 || !prefixOk || rest.length > 0) {
    invalid(`expected an IP address, a CIDR range (10.0.0.0/8) or one of ${PROXY_KEYWORDS.join(', ')}`)
  }
  return text
}

/** "off" (or null in a file) turns a gc setting off. */
function isOff (v: unknown): v is null | 'off' {
  return v === null || v === 'off'
}

function size (v: string | number): number {
  const bytes = typeof v === 'number' ? v : parseSize(v)
  return bytes ?? invalid(`expected ${SIZE_HELP}`)
}

function duration (v: string): number {
  return parseDuration(v) ?? invalid(`expected ${DURATION_HELP}`)
}

const sizeOrOff = (description: string, env: string) => decoded(
  Type.Union([Type.String(), Type.Integer({ minimum: 0 }), Type.Null()], o(description, { env, default: null, expected: SIZE_HELP })),
  v => isOff(v) ? null : size(v))

const durationOrOff = (description: string, env: string, defaultValue: string | null) => decoded(
  Type.Union([Type.String(), Type.Null()], o(description, { env, default: defaultValue, expected: DURATION_HELP })),
  v => isOff(v) ? null : duration(v))

const aDuration = (description: string, env: string, defaultValue: string) => decoded(
  Type.String(o(description, { env, default: defaultValue, expected: DURATION_HELP })), duration)

/** Defaults are written as a config file would give them; what each means is in the README's table. */
export const configSchema = Type.Object({
  dataDir: decoded(Type.String(o('folder holding the database, the NAR files and generated keys',
    { env: 'NARWHAL_DATA', flag: 'data', path: true, minLength: 1, default: './data' })), p => path.resolve(p)),
  listen: decoded(Type.String(o('HOST:PORT to listen on', { env: 'NARWHAL_LISTEN', flag: 'listen', default: '127.0.0.1:5000' })), parseListen),
  trustedKeys: Type.Array(Type.String({ minLength: 1 }), o('public keys (name:base64) whose signatures make an upload acceptable',
    { env: 'NARWHAL_TRUSTED_KEYS', flag: 'trusted-key', default: [], expected: 'an array of "name:base64" strings' })),
  // 30: consulted before cache.nixos.org (40), so a team's own builds win when both have a path.
  priority: integer(0, '`Priority` in nix-cache-info; lower is tried first', { env: 'NARWHAL_PRIORITY', default: 30 }),
  private: Type.Boolean(o('reads need a token with read scope as well', { env: 'NARWHAL_PRIVATE', default: false })),
  logLevel: Type.Union(LOG_LEVELS.map(l => Type.Literal(l)), o('pino log level',
    { env: 'NARWHAL_LOG_LEVEL', default: 'info', expected: `one of ${LOG_LEVELS.join(', ')}` })),
  limits: Type.Object({
    // Nix NARs of several GiB are common.
    narBytes: integer(1, 'largest NAR file accepted', { default: 64 * 1024 ** 3 }),
    // 256 GiB, four times narBytes: even compressed as well as store paths often are (hello 2.10 on
    // cache.nixos.org: 5x with xz) a NAR fits unless its file is above about 50 GiB. Without it a
    // few KiB of zstd or xz that decompress to terabytes would have the server work without end.
    narSizeBytes: integer(1, 'largest NAR accepted once decompressed (its NarSize)', { default: 256 * 1024 ** 3 }),
    // Real ones are under 2 KiB; 64 KiB leaves room for many Sig lines.
    narinfoBytes: integer(1, 'largest narinfo', { default: 64 * 1024 }),
    logBytes: integer(1, 'largest build log (as sent, possibly compressed)', { default: 64 * 1024 ** 2 }),
    listingBytes: integer(1, 'largest .ls listing', { default: 64 * 1024 ** 2 }),
    smallFileBytes: integer(1, 'largest realisation, debuginfo link or nix-cache-info', { default: 64 * 1024 }),
    // 1 GiB: room for SQLite's WAL and the logs, so a full disk never stops the cache serving.
    freeSpaceReserveBytes: integer(0, 'free disk space a NAR upload must leave behind', { default: 1024 ** 3 })
  }, { additionalProperties: false, default: {} }),
  /**
   * Per-client request budgets. A client is its token when it presents a valid one, else its
   * address (an IPv6 address by its /64). The counters live in this process's memory.
   */
  rateLimit: Type.Object({
    enabled: Type.Boolean(o('switch for the budgets', { env: 'NARWHAL_RATE_LIMIT', default: true })),
    // Short, so that Nix's retries (about 0.3, 0.9, 2 and 4.5 s after a 429) reach a fresh window.
    // Nix ignores Retry-After, so a window longer than ~3 s turns a throttled client into a failed one.
    windowSeconds: integer(1, 'length of one counting window', { env: 'NARWHAL_RATE_LIMIT_WINDOW_SECONDS', default: 1, maximum: 3600, unit: 'seconds' }),
    // Off: one `nix copy --from` of 2,000 paths makes ~2,000 reads/s here, and Nix fails a
    // substitution whose retries do not fit in the budget.
    reads: integer(0, 'GET/HEAD requests per client per window; 0 is unlimited', { env: 'NARWHAL_RATE_LIMIT_READS', default: 0 }),
    // Off: pushing is done by trusted builders with tokens.
    writes: integer(0, 'PUT/POST requests per client per window; 0 is unlimited', { env: 'NARWHAL_RATE_LIMIT_WRITES', default: 0 }),
    // Per address: a scanner trying tokens gets 429 instead of a 401 log line per guess.
    failedAuth: integer(0, '401 answers per address per window before 429; 0 is unlimited', { env: 'NARWHAL_RATE_LIMIT_FAILED_AUTH', default: 30 })
  }, { additionalProperties: false, default: {} }),
  /** Time limits on a connection; none of them bounds a whole transfer, which may take hours. */
  timeouts: Type.Object({
    // Longer than any pause of a moving transfer, short enough that dead clients do not hold sockets long.
    idleSeconds: integer(1, 'a socket with no byte moving either way for this long is closed', { env: 'NARWHAL_IDLE_TIMEOUT_SECONDS', default: 60 }),
    headersSeconds: integer(1, 'a request must have sent all its headers within this long', { env: 'NARWHAL_HEADERS_TIMEOUT_SECONDS', default: 30 })
  }, { additionalProperties: false, default: {} }),
  trustProxy: Type.Array(decoded(Type.String({ minLength: 1 }), proxyAddress), o('reverse proxies whose X-Forwarded-For names the client',
    { env: 'NARWHAL_TRUST_PROXY', default: [], expected: 'an array of addresses or CIDR ranges', text: t => splitWords(t.replaceAll(',', ' ')) })),
  /** Garbage collection (`narwhal gc`, and the schedule `narwhal serve` runs). Decoded times are in ms. */
  gc: Type.Object({
    maxSize: sizeOrOff('evict least recently used paths until NAR files take at most this', 'NARWHAL_GC_MAX_SIZE'),
    olderThan: durationOrOff('evict paths not used for this long', 'NARWHAL_GC_OLDER_THAN', null),
    // Hourly: with no maxSize or olderThan, a run only removes NAR files no narinfo named within unnamedNarGrace.
    interval: decoded(Type.Union([Type.String(), Type.Null()], o('how often serve collects', { env: 'NARWHAL_GC_INTERVAL', default: '1h', expected: DURATION_HELP })),
      v => {
        if (isOff(v)) return null
        return duration(v) || invalid('must be longer than 0 (use "off" to turn the schedule off)')
      }),
    // Nix uploads a NAR before its narinfo.
    unnamedNarGrace: aDuration('NAR files no narinfo names are removed once they are this old', 'NARWHAL_GC_UNNAMED_NAR_GRACE', '24h'),
    // A push or a substitution may be under way.
    keepRecent: aDuration('maxSize never evicts a path used this recently', 'NARWHAL_GC_KEEP_RECENT', '1h')
  }, { additionalProperties: false, default: {} }),
  // One process unless asked: more cost memory (a V8 heap each) and change nothing for a small team.
  // A file gives a number or "auto"; text elsewhere is a number when it is all digits.
  workers: decoded(Type.Union([Type.Integer({ minimum: 1 }), Type.Literal('auto')], o('server processes sharing the port (node:cluster)',
    { env: 'NARWHAL_WORKERS', flag: 'workers', default: 1, expected: 'a positive integer or "auto"', text: t => /^\d+$/.test(t) ? Number(t) : t })),
  v => v === 'auto' ? Math.min(os.availableParallelism(), MAX_AUTO_WORKERS) : v),
  // NARWHAL_UPSTREAMS and --upstream pair with the keys given for all of them: read by loadConfig.
  upstreams: Type.Array(upstreamSchema, o('caches to pull through from, in the order they are asked (upstreams.ts)',
    { default: [], expected: 'an array of { "url", "publicKeys" } objects' })),
  audit: Type.Object({
    // About 300 MB of database at most (313 bytes an entry; BENCHMARKS.md).
    maxEntries: integer(1, 'the audit log keeps its newest this many entries', { env: 'NARWHAL_AUDIT_MAX_ENTRIES', default: 1_000_000 })
  }, { additionalProperties: false, default: {} }),
  /**
   * null: the SQLite file in the data folder. The URL is parsed where the cache is opened
   * (cache/open-cache.ts), by the database's own parser, which names the part at fault.
   */
  database: Type.Union([Type.String({ minLength: 1 }), Type.Null()], o('postgres://USER[:PASS]@HOST[:PORT]/DB; default the SQLite file in the data folder',
    { env: 'NARWHAL_DATABASE_URL', flag: 'database', default: null, expected: 'a postgres://USER[:PASS]@HOST[:PORT]/DB URL' })),
  /** Where NAR files and the other files are kept; a file may give `"storage": "s3://…"` for `{ "url": … }`. */
  storage: Type.Object({
    /** null: the data folder. Parsed where the cache is opened, by storage/s3-url.ts. */
    url: Type.Union([Type.String({ minLength: 1 }), Type.Null()], o('s3://BUCKET?region=R&endpoint=HOST[:PORT]&scheme=http|https; default the data folder',
      { env: 'NARWHAL_STORAGE_URL', flag: 'storage', default: null, expected: 'an s3://BUCKET?… URL' })),
    redirectNars: Type.Boolean(o('answer NAR downloads with a redirect to a short-lived presigned URL (S3 only)',
      { env: 'NARWHAL_STORAGE_REDIRECT_NARS', default: false }))
  }, { additionalProperties: false, default: {}, shorthand: 'url', expected: 'an s3://BUCKET?… URL or { "url", "redirectNars" }' })
}, { additionalProperties: false })

export type Config = StaticDecode<typeof configSchema>
export type Limits = Config['limits']
export type RateLimit = Config['rateLimit']
export type Timeouts = Config['timeouts']
export type GcSettings = Config['gc']
export type AuditSettings = Config['audit']
export type StorageSettings = Config['storage']
export type { UpstreamConfig }

/**
 * The settings that may come from flags, by their setting's name (the flag itself is named in
 * configSchema); undefined means "not given".
 */
export interface ConfigOverrides {
  configFile?: string | undefined
  dataDir?: string | undefined
  listen?: string | undefined
  trustedKeys?: string[] | undefined
  workers?: string | undefined
  database?: string | undefined
  /** The storage URL (storage.url). */
  storage?: string | undefined
  upstreams?: string[] | undefined
  upstreamKeys?: string[] | undefined
}

export function loadConfig (overrides: ConfigOverrides = {}, env: NodeJS.ProcessEnv = process.env): Readonly<Config> {
  const file = overrides.configFile ?? env.NARWHAL_CONFIG
  // An override is named after its setting's top-level key (storage for storage.url); its flag after the schema.
  const given = overrides as Record<string, string | string[] | undefined>
  const flags: Flags = Object.fromEntries(settingsOf(configSchema).flatMap(({ keys, setting }) =>
    setting.flag === undefined ? [] : [[setting.flag, given[keys[0] ?? '']]]))
  const config = loadSettings(configSchema, { file: file === '' ? undefined : file, env, flags })
  const envUpstreams = upstreamsFromList(splitWords(env.NARWHAL_UPSTREAMS ?? ''), splitWords(env.NARWHAL_UPSTREAM_KEYS ?? ''),
    'NARWHAL_UPSTREAMS', 'NARWHAL_UPSTREAM_KEYS')
  const flagUpstreams = upstreamsFromList(overrides.upstreams ?? [], overrides.upstreamKeys ?? [], '--upstream', '--upstream-key')
  const upstreams = flagUpstreams.length > 0 ? flagUpstreams : envUpstreams.length > 0 ? envUpstreams : undefined
  if (config.storage.redirectNars && config.storage.url === null) {
    throw new ConfigError('storage.redirectNars: only an S3 storage can redirect NAR downloads; the storage is the data folder (no storage URL given)')
  }
  return upstreams === undefined ? config : Object.freeze({ ...config, upstreams })
}
