/**
 * Pusher configuration, declared and loaded as the server's (src/config/settings.ts): defaults,
 * then an optional JSON file (`--config FILE` or NARWHAL_PUSHER_CONFIG), then `NARWHAL_*`
 * environment variables. Unknown keys and bad values stop the start with a message naming the
 * key, its source and the reason.
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
import { Type, type StaticDecode } from '@sinclair/typebox'
import { decoded, invalid, loadSettings, o } from '../config/settings.js'
import { ConfigError } from '../config/values.js'
import { DEFAULT_QUEUE_DIR } from './queue-dir.js'

export { DEFAULT_QUEUE_DIR, queueDirFromEnv } from './queue-dir.js'

/** An http(s) URL, without its trailing slashes; '' (not configured) stays ''. */
function serverUrl (text: string | null): string {
  if (text === null) return ''
  let url: URL | undefined
  try {
    url = new URL(text)
  } catch {
    url = undefined
  }
  if (url === undefined || (url.protocol !== 'http:' && url.protocol !== 'https:')) invalid('expected an http:// or https:// URL')
  return text.replace(/\/+$/, '')
}

const absolute = (p: string): string => path.resolve(p)

/** The pusher's settings (src/config/settings.ts says how a schema is read); defaults as a file gives them. */
export const pusherSchema = Type.Object({
  server: decoded(Type.Union([Type.String(), Type.Null()], o('base URL of the narwhal server (or any Nix HTTP binary cache that accepts PUT)',
    { env: 'NARWHAL_SERVER', default: null, expected: 'an http:// or https:// URL' })), serverUrl),
  tokenFile: decoded(Type.Union([Type.String({ minLength: 1 }), Type.Null()], o('file holding a push-scope token; none: unauthenticated requests',
    { env: 'NARWHAL_TOKEN_FILE', path: true, default: null, expected: 'a non-empty string' })), p => p === null ? undefined : absolute(p)),
  secretKeyFiles: decoded(Type.Array(Type.String({ minLength: 1 }), o('Nix secret key files; every upload is signed with each',
    { env: 'NARWHAL_SECRET_KEY_FILES', path: true, default: [], expected: 'an array of strings' })), files => files.map(absolute)),
  queueDir: decoded(Type.String(o('spool and queue; the hook reads only NARWHAL_QUEUE_DIR',
    { env: 'NARWHAL_QUEUE_DIR', path: true, minLength: 1, default: DEFAULT_QUEUE_DIR })), absolute),
  concurrency: Type.Integer(o('NAR uploads in flight at once', { env: 'NARWHAL_PUSH_CONCURRENCY', minimum: 1, default: 4 })),
  compression: Type.Union([Type.Literal('zstd'), Type.Literal('xz'), Type.Literal('none')], o('compression of uploaded NARs',
    { env: 'NARWHAL_COMPRESSION', default: 'zstd', expected: '"zstd", "xz" or "none"' })),
  compressionLevel: decoded(Type.Union([Type.Integer({ minimum: 0 }), Type.Null()], o("compression level; none: the codec's default (zstd 3, xz 6)",
    { default: null, expected: 'an integer >= 0' })), level => level ?? undefined),
  skipSignedBy: Type.Array(Type.String({ minLength: 1 }), o('paths carrying a signature by one of these key names are not uploaded',
    { env: 'NARWHAL_SKIP_SIGNED_BY', default: [], expected: 'an array of strings' })),
  batchNarBytes: Type.Integer(o('NARs up to this many compressed bytes go up together in multipart batches', { minimum: 0, default: 256 * 1024 })),
  batchMaxBytes: Type.Integer(o('a multipart batch is sent once it holds this many bytes', { minimum: 1, default: 8 * 1024 * 1024 })),
  maxRetryDelaySeconds: Type.Integer(o('longest wait between retries of a transient failure', { env: 'NARWHAL_MAX_RETRY_DELAY', minimum: 1, default: 300 })),
  pollMs: Type.Integer(o('how often the spool folder is polled, in milliseconds', { minimum: 10, default: 200 }))
}, { additionalProperties: false })

export type PusherConfig = StaticDecode<typeof pusherSchema>
export type PushCompression = PusherConfig['compression']

/** The defaults, as a mutable object (tests adjust it). */
export function defaultPusherConfig (): PusherConfig {
  return { ...loadSettings(pusherSchema, { env: {} }) }
}

export interface PusherConfigOptions {
  configFile?: string | undefined
  /** `push` needs no queue; `pusher` needs a server and at least one key. */
  requireKeys?: boolean
  requireServer?: boolean
}

export function loadPusherConfig (options: PusherConfigOptions = {}, env: NodeJS.ProcessEnv = process.env): Readonly<PusherConfig> {
  const file = options.configFile ?? env.NARWHAL_PUSHER_CONFIG
  const config = loadSettings(pusherSchema, { file: file === '' ? undefined : file, env })
  if (options.requireServer === true && config.server === '') {
    throw new ConfigError('server: no server URL configured (NARWHAL_SERVER, or "server" in the config file)')
  }
  if (options.requireKeys === true && config.secretKeyFiles.length === 0) {
    throw new ConfigError('secretKeyFiles: no secret key file configured (NARWHAL_SECRET_KEY_FILES, or "secretKeyFiles" in the config file)')
  }
  return config
}
