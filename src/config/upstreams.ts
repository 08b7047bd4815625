/**
 * The `upstreams` setting: caches narwhal pulls through from when it does not hold a path, tried
 * in the order given. From the config file:
 *
 *   "upstreams": [{ "url": "https://cache.nixos.org", "publicKeys": ["cache.nixos.org-1:…"],
 *                   "token": "…" | "netrcFile": "/etc/nix/netrc",
 *                   "timeouts": { "connectSeconds": 3, "answerSeconds": 5 },
 *                   "negativeCacheSeconds": 60, "failureBackoffSeconds": 30 }]
 *
 * or from `--upstream URL` / NARWHAL_UPSTREAMS with `--upstream-key NAME:BASE64` /
 * NARWHAL_UPSTREAM_KEYS, whose keys apply to every upstream given the same way. The keys' bytes
 * are checked where they are parsed (src/upstream/), which names the setting in its error.
 */
import { ConfigError, isRecord } from './values.js'

export interface UpstreamConfig {
  /** Base URL, without a trailing slash. */
  url: string
  /** `name:base64` keys; a narinfo from this upstream is served only with a signature by one of them. */
  publicKeys: string[]
  /** Sent as `Authorization: Bearer …` (a private upstream). */
  token: string | null
  /** A netrc file whose entry for the upstream's host gives Basic credentials (as Nix's netrc-file). */
  netrcFile: string | null
  /** Time to set up a connection, and to wait for an answer (or between two pieces of a body). */
  connectSeconds: number
  answerSeconds: number
  /** How long a path no upstream has is answered 404 without asking again. */
  negativeCacheSeconds: number
  /** An upstream that failed FAILURES_BEFORE_BACKOFF times in a row is not asked for this long. */
  failureBackoffSeconds: number
}

export const UPSTREAM_DEFAULTS = {
  // Short: a miss must never hang a client, and a LAN appliance reaches a healthy upstream in
  // well under a second.
  connectSeconds: 3,
  answerSeconds: 5,
  // Nix itself remembers a miss for an hour; a minute keeps a path pushed to the upstream meanwhile
  // from staying invisible for long.
  negativeCacheSeconds: 60,
  failureBackoffSeconds: 30
} as const

const KEYS = ['url', 'publicKeys', 'token', 'netrcFile', 'timeouts', 'negativeCacheSeconds', 'failureBackoffSeconds']

function seconds (v: unknown, key: string, min: number): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min || v > 86_400) {
    throw new ConfigError(`${key}: expected a whole number of seconds from ${min} to 86400, got ${JSON.stringify(v)}`)
  }
  return v
}

/** An http(s) URL with nothing after the path; returned without its trailing slashes. */
export function expectUpstreamUrl (v: unknown, key: string): string {
  let url: URL | undefined
  try {
    url = typeof v === 'string' ? new URL(v) : undefined
  } catch {
    url = undefined
  }
  if (url === undefined || !['http:', 'https:'].includes(url.protocol) || url.search !== '' || url.hash !== '' ||
    url.username !== '' || url.password !== '') {
    throw new ConfigError(`${key}: expected an http:// or https:// URL without query, fragment or credentials ` +
      `(credentials go in token or netrcFile), got ${JSON.stringify(v)}`)
  }
  return url.toString().replace(/\/+$/, '')
}

function expectKeys (v: unknown, key: string): string[] {
  if (!Array.isArray(v) || v.length === 0 || !v.every(k => typeof k === 'string' && k !== '')) {
    throw new ConfigError(`${key}: expected a non-empty array of "name:base64" public keys; ` +
      'narwhal serves nothing from an upstream whose signatures it cannot check')
  }
  return v as string[]
}

function fromFileEntry (raw: unknown, key: string): UpstreamConfig {
  if (!isRecord(raw)) throw new ConfigError(`${key}: expected an object with url and publicKeys`)
  for (const k of Object.keys(raw)) {
    if (!KEYS.includes(k)) throw new ConfigError(`${key}.${k}: unknown setting (known: ${KEYS.join(', ')})`)
  }
  const text = (name: string): string | null => {
    const v = raw[name]
    if (v === undefined || v === null) return null
    if (typeof v !== 'string' || v === '') throw new ConfigError(`${key}.${name}: expected a non-empty string`)
    return v
  }
  const timeouts = raw.timeouts ?? {}
  if (!isRecord(timeouts)) throw new ConfigError(`${key}.timeouts: expected an object`)
  for (const k of Object.keys(timeouts)) {
    if (k !== 'connectSeconds' && k !== 'answerSeconds') throw new ConfigError(`${key}.timeouts.${k}: unknown setting (known: connectSeconds, answerSeconds)`)
  }
  const token = text('token')
  const netrcFile = text('netrcFile')
  if (token !== null && netrcFile !== null) throw new ConfigError(`${key}: give token or netrcFile, not both`)
  return {
    url: expectUpstreamUrl(raw.url, `${key}.url`),
    publicKeys: expectKeys(raw.publicKeys, `${key}.publicKeys`),
    token,
    netrcFile,
    connectSeconds: timeouts.connectSeconds === undefined ? UPSTREAM_DEFAULTS.connectSeconds : seconds(timeouts.connectSeconds, `${key}.timeouts.connectSeconds`, 1),
    answerSeconds: timeouts.answerSeconds === undefined ? UPSTREAM_DEFAULTS.answerSeconds : seconds(timeouts.answerSeconds, `${key}.timeouts.answerSeconds`, 1),
    negativeCacheSeconds: raw.negativeCacheSeconds === undefined ? UPSTREAM_DEFAULTS.negativeCacheSeconds : seconds(raw.negativeCacheSeconds, `${key}.negativeCacheSeconds`, 0),
    failureBackoffSeconds: raw.failureBackoffSeconds === undefined ? UPSTREAM_DEFAULTS.failureBackoffSeconds : seconds(raw.failureBackoffSeconds, `${key}.failureBackoffSeconds`, 0)
  }
}

/** The `upstreams` array of a config file. */
export function upstreamsFromFile (raw: unknown): UpstreamConfig[] {
  if (!Array.isArray(raw)) throw new ConfigError('upstreams: expected an array of { "url", "publicKeys" } objects')
  return raw.map((entry, i) => fromFileEntry(entry, `upstreams[${i}]`))
}

/**
 * Upstreams given as a list of URLs and a list of keys for all of them (flags or environment);
 * `urlsKey` and `keysKey` name the setting in errors.
 */
export function upstreamsFromList (urls: string[], keys: string[], urlsKey: string, keysKey: string): UpstreamConfig[] {
  if (urls.length === 0) {
    if (keys.length > 0) throw new ConfigError(`${keysKey}: given without ${urlsKey}; the keys apply to the upstreams given with it`)
    return []
  }
  if (keys.length === 0) {
    throw new ConfigError(`${urlsKey}: needs ${keysKey} NAME:BASE64 (the upstream's public key, e.g. cache.nixos.org-1:…); ` +
      'narwhal serves nothing from an upstream whose signatures it cannot check')
  }
  return urls.map((u, i) => ({
    ...UPSTREAM_DEFAULTS,
    url: expectUpstreamUrl(u, urls.length > 1 ? `${urlsKey} (${i + 1})` : urlsKey),
    publicKeys: keys,
    token: null,
    netrcFile: null
  }))
}
