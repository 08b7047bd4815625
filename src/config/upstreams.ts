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
import { Type, type StaticDecode } from '@sinclair/typebox'
import { decoded, Invalid, invalid, o } from './settings.js'
import { ConfigError } from './values.js'

const URL_FORM = 'an http:// or https:// URL without query, fragment or credentials (credentials go in token or netrcFile)'

/** An http(s) URL with nothing after the path; returned without its trailing slashes. */
function upstreamUrl (text: string): string {
  let url: URL | undefined
  try {
    url = new URL(text)
  } catch {
    url = undefined
  }
  if (url === undefined || !['http:', 'https:'].includes(url.protocol) || url.search !== '' || url.hash !== '' ||
    url.username !== '' || url.password !== '') {
    invalid(`expected ${URL_FORM}`)
  }
  return url.toString().replace(/\/+$/, '')
}

const seconds = (min: number, defaultValue: number, description: string) =>
  Type.Integer(o(description, { minimum: min, maximum: 86_400, default: defaultValue, expected: `a whole number of seconds from ${min} to 86400` }))
const secret = (description: string) =>
  Type.Union([Type.String({ minLength: 1 }), Type.Null()], o(description, { default: null, expected: 'a non-empty string' }))

/** One entry of the file's `upstreams` array. */
export const upstreamSchema = decoded(Type.Object({
  url: decoded(Type.String(o('base URL', { expected: URL_FORM })), upstreamUrl),
  publicKeys: Type.Array(Type.String({ minLength: 1 }), o('keys whose signature a narinfo from this upstream needs', {
    minItems: 1,
    expected: 'a non-empty array of "name:base64" public keys; narwhal serves nothing from an upstream whose signatures it cannot check'
  })),
  token: secret('sent as Authorization: Bearer …'),
  netrcFile: secret('a netrc file whose entry for the host gives Basic credentials'),
  timeouts: Type.Object({
    // Short: a miss must never hang a client, and a LAN appliance reaches a healthy upstream in well under a second.
    connectSeconds: seconds(1, 3, 'time to set up a connection'),
    answerSeconds: seconds(1, 5, 'time to wait for an answer, or between two pieces of a body')
  }, { additionalProperties: false, default: {} }),
  // Nix itself remembers a miss for an hour; a minute keeps a path pushed to the upstream meanwhile from staying invisible for long.
  negativeCacheSeconds: seconds(0, 60, 'how long a path no upstream has is answered 404 without asking again'),
  failureBackoffSeconds: seconds(0, 30, 'an upstream that failed FAILURES_BEFORE_BACKOFF times in a row is not asked for this long')
}, { additionalProperties: false, expected: 'an object with url and publicKeys' }), entry => {
  if (entry.token !== null && entry.netrcFile !== null) invalid('give token or netrcFile, not both')
  const { timeouts, ...rest } = entry
  return { ...rest, ...timeouts }
})

export type UpstreamConfig = StaticDecode<typeof upstreamSchema>

const { timeouts, negativeCacheSeconds, failureBackoffSeconds } = upstreamSchema.properties
/** The schema's defaults, for upstreams given by flags or variables. */
export const UPSTREAM_DEFAULTS = {
  connectSeconds: timeouts.properties.connectSeconds.default as number,
  answerSeconds: timeouts.properties.answerSeconds.default as number,
  negativeCacheSeconds: negativeCacheSeconds.default as number,
  failureBackoffSeconds: failureBackoffSeconds.default as number
}

/** The URL of a flag or variable, `key` naming it in the error. */
function urlOf (text: string, key: string): string {
  try {
    return upstreamUrl(text)
  } catch (err) {
    if (err instanceof Invalid) throw new ConfigError(`${key}: ${err.message}, got ${JSON.stringify(text)}`)
    throw err
  }
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
    url: urlOf(u, urls.length > 1 ? `${urlsKey} (${i + 1})` : urlsKey),
    publicKeys: keys,
    token: null,
    netrcFile: null
  }))
}
