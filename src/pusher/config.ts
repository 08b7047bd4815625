/**
 * Pusher configuration, in the server's style (src/config/config.ts): typed defaults, then an
 * optional JSON file (`--config FILE` or NARWHAL_PUSHER_CONFIG), then `NARWHAL_*` environment
 * variables. Unknown keys and bad values stop the start with a message naming the key.
 *
 *   {
 *     "server": "http://cache.internal:5000",
 *     "tokenFile": "/etc/narwhal/push-token",
 *     "secretKeyFiles": ["/etc/narwhal/cache-1.secret"],
 *     "queueDir": "/var/lib/narwhal/queue",
 *     "concurrency": 4,
 *     "compression": "zstd",
 *     "skipSignedBy": ["cache.nixos.org-1"]
 *   }
 *
 * The hook reads only NARWHAL_QUEUE_DIR (it must stay tiny), so the queue folder's default is the
 * same in both places.
 */
import path from 'node:path'
import { readJsonConfigFile } from '../config/config.js'
import { ConfigError, expectInteger, expectString, expectStrings, isRecord, rejectUnknown, splitWords } from '../config/values.js'

export const DEFAULT_QUEUE_DIR = '/var/lib/narwhal/queue'

export type PushCompression = 'zstd' | 'xz'

export interface PusherConfig {
  /** Base URL of the narwhal server (or any Nix HTTP binary cache that accepts PUT). */
  server: string
  /** File holding a push-scope token; none means unauthenticated requests. */
  tokenFile: string | undefined
  /** Nix secret key files; every upload is signed with each of them. */
  secretKeyFiles: string[]
  queueDir: string
  /** NAR uploads in flight at once. */
  concurrency: number
  compression: PushCompression
  /** Compression level; undefined uses the codec's default (zstd 3, xz 6). */
  compressionLevel: number | undefined
  /** Paths carrying a signature by one of these key names are not uploaded. */
  skipSignedBy: string[]
  /** NARs up to this many compressed bytes go up together in multipart batches. */
  batchNarBytes: number
  /** A multipart batch is sent once it holds this many bytes. */
  batchMaxBytes: number
  /** Longest wait between retries of a transient failure. */
  maxRetryDelaySeconds: number
  /** How often the spool folder is polled, in milliseconds. */
  pollMs: number
}

export function defaultPusherConfig (): PusherConfig {
  return {
    server: '',
    tokenFile: undefined,
    secretKeyFiles: [],
    queueDir: DEFAULT_QUEUE_DIR,
    concurrency: 4,
    compression: 'zstd',
    compressionLevel: undefined,
    skipSignedBy: [],
    batchNarBytes: 256 * 1024,
    batchMaxBytes: 8 * 1024 * 1024,
    maxRetryDelaySeconds: 300,
    pollMs: 200
  }
}

export const PUSHER_ENV_KEYS = ['NARWHAL_PUSHER_CONFIG', 'NARWHAL_SERVER', 'NARWHAL_TOKEN_FILE', 'NARWHAL_SECRET_KEY_FILES',
  'NARWHAL_QUEUE_DIR', 'NARWHAL_PUSH_CONCURRENCY', 'NARWHAL_COMPRESSION', 'NARWHAL_SKIP_SIGNED_BY',
  'NARWHAL_MAX_RETRY_DELAY'] as const

const FILE_KEYS = ['server', 'tokenFile', 'secretKeyFiles', 'queueDir', 'concurrency', 'compression', 'compressionLevel',
  'skipSignedBy', 'batchNarBytes', 'batchMaxBytes', 'maxRetryDelaySeconds', 'pollMs']

function expectCompression (v: unknown, key: string): PushCompression {
  if (v !== 'zstd' && v !== 'xz') throw new ConfigError(`${key}: expected "zstd" or "xz", got ${JSON.stringify(v)}`)
  return v
}

function expectServer (v: unknown, key: string): string {
  const s = expectString(v, key)
  let url: URL
  try {
    url = new URL(s)
  } catch {
    throw new ConfigError(`${key}: expected an http:// or https:// URL, got ${JSON.stringify(s)}`)
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new ConfigError(`${key}: expected an http:// or https:// URL, got ${JSON.stringify(s)}`)
  }
  return s.replace(/\/+$/, '')
}

function applyFile (config: PusherConfig, raw: unknown, file: string): void {
  if (!isRecord(raw)) throw new ConfigError(`${file}: expected a JSON object`)
  rejectUnknown(raw, FILE_KEYS, '')
  const dir = path.dirname(file)
  const resolve = (p: string): string => path.resolve(dir, p)
  if (raw.server !== undefined) config.server = expectServer(raw.server, 'server')
  if (raw.tokenFile !== undefined) config.tokenFile = resolve(expectString(raw.tokenFile, 'tokenFile'))
  if (raw.secretKeyFiles !== undefined) config.secretKeyFiles = expectStrings(raw.secretKeyFiles, 'secretKeyFiles').map(resolve)
  if (raw.queueDir !== undefined) config.queueDir = resolve(expectString(raw.queueDir, 'queueDir'))
  if (raw.concurrency !== undefined) config.concurrency = expectInteger(raw.concurrency, 'concurrency', 1)
  if (raw.compression !== undefined) config.compression = expectCompression(raw.compression, 'compression')
  if (raw.compressionLevel !== undefined) config.compressionLevel = expectInteger(raw.compressionLevel, 'compressionLevel', 0)
  if (raw.skipSignedBy !== undefined) config.skipSignedBy = expectStrings(raw.skipSignedBy, 'skipSignedBy')
  if (raw.batchNarBytes !== undefined) config.batchNarBytes = expectInteger(raw.batchNarBytes, 'batchNarBytes', 0)
  if (raw.batchMaxBytes !== undefined) config.batchMaxBytes = expectInteger(raw.batchMaxBytes, 'batchMaxBytes', 1)
  if (raw.maxRetryDelaySeconds !== undefined) config.maxRetryDelaySeconds = expectInteger(raw.maxRetryDelaySeconds, 'maxRetryDelaySeconds', 1)
  if (raw.pollMs !== undefined) config.pollMs = expectInteger(raw.pollMs, 'pollMs', 10)
}

export interface PusherConfigOptions {
  configFile?: string | undefined
  /** `push` needs no queue; `pusher` needs a server and at least one key. */
  requireKeys?: boolean
  requireServer?: boolean
}

/** The queue folder alone, as the hook and `queue status|wait` see it. */
export function queueDirFromEnv (env: NodeJS.ProcessEnv = process.env): string {
  const dir = env.NARWHAL_QUEUE_DIR
  return dir === undefined || dir === '' ? DEFAULT_QUEUE_DIR : path.resolve(dir)
}

export function loadPusherConfig (options: PusherConfigOptions = {}, env: NodeJS.ProcessEnv = process.env): Readonly<PusherConfig> {
  const config = defaultPusherConfig()
  const file = options.configFile ?? env.NARWHAL_PUSHER_CONFIG
  if (file !== undefined && file !== '') applyFile(config, readJsonConfigFile(file), path.resolve(file))
  const set = (name: string): string | undefined => {
    const v = env[name]
    return v === undefined || v.trim() === '' ? undefined : v.trim()
  }
  const server = set('NARWHAL_SERVER')
  if (server !== undefined) config.server = expectServer(server, 'NARWHAL_SERVER')
  const tokenFile = set('NARWHAL_TOKEN_FILE')
  if (tokenFile !== undefined) config.tokenFile = path.resolve(tokenFile)
  const keys = set('NARWHAL_SECRET_KEY_FILES')
  if (keys !== undefined) config.secretKeyFiles = splitWords(keys).map(k => path.resolve(k))
  const queueDir = set('NARWHAL_QUEUE_DIR')
  if (queueDir !== undefined) config.queueDir = path.resolve(queueDir)
  const concurrency = set('NARWHAL_PUSH_CONCURRENCY')
  if (concurrency !== undefined) config.concurrency = expectInteger(Number(concurrency), 'NARWHAL_PUSH_CONCURRENCY', 1)
  const compression = set('NARWHAL_COMPRESSION')
  if (compression !== undefined) config.compression = expectCompression(compression, 'NARWHAL_COMPRESSION')
  const skip = set('NARWHAL_SKIP_SIGNED_BY')
  if (skip !== undefined) config.skipSignedBy = splitWords(skip)
  const maxDelay = set('NARWHAL_MAX_RETRY_DELAY')
  if (maxDelay !== undefined) config.maxRetryDelaySeconds = expectInteger(Number(maxDelay), 'NARWHAL_MAX_RETRY_DELAY', 1)
  config.queueDir = path.resolve(config.queueDir)
  if (options.requireServer === true && config.server === '') {
    throw new ConfigError('server: no server URL configured (NARWHAL_SERVER, or "server" in the config file)')
  }
  if (options.requireKeys === true && config.secretKeyFiles.length === 0) {
    throw new ConfigError('secretKeyFiles: no secret key file configured (NARWHAL_SECRET_KEY_FILES, or "secretKeyFiles" in the config file)')
  }
  return Object.freeze(config)
}
