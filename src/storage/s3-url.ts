/**
 * The storage URL of an S3 bucket, in the form Nix itself uses for S3 stores (Nix's
 * s3-binary-cache-store.hh and s3-url.cc), so one URL names the same bucket to both:
 *
 *   s3://BUCKET?region=R&endpoint=HOST[:PORT]&scheme=http|https&profile=P&addressing-style=auto|path|virtual&prefix=P/
 *
 * - region: default us-east-1, as in Nix.
 * - endpoint: an S3-compatible service, HOST[:PORT] or a whole http(s) URL (Nix accepts both);
 *   without it, AWS S3 itself.
 * - scheme: http or https (default https), for an endpoint given without one.
 * - profile: the AWS configuration profile whose credentials are used; without it the standard
 *   chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ~/.aws files).
 * - addressing-style: auto (path-style with an endpoint or a bucket name with dots, else
 *   virtual-hosted), path or virtual, as in Nix.
 * - prefix: narwhal's own: every key starts with it (Nix has no such store setting), so one
 *   bucket can hold several caches. Stored ending in "/".
 *
 * Anything else is refused by name: a misspelt parameter silently ignored would send a cache's
 * objects somewhere else than meant.
 */
import { NarwhalError } from '../errors.js'

export interface S3Location {
  bucket: string
  region: string
  /** The service's base URL (scheme, host, port, maybe a path), or undefined for AWS S3. */
  endpoint: string | undefined
  /** Path-style (`ENDPOINT/BUCKET/KEY`) rather than virtual-hosted (`BUCKET.ENDPOINT/KEY`) requests. */
  forcePathStyle: boolean
  profile: string | undefined
  /** '' or a key prefix ending in '/'. */
  prefix: string
}

export const S3_URL_PARAMETERS = ['region', 'endpoint', 'scheme', 'profile', 'addressing-style', 'prefix'] as const
type Parameter = typeof S3_URL_PARAMETERS[number]

const DEFAULT_REGION = 'us-east-1'
/** AWS's rules for general-purpose bucket names (lowercase, 3 to 63 characters, no "..", not an IP). */
const BUCKET = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/
const REGION = /^[a-z0-9-]{1,64}$/
const HOST_PORT = /^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]+\])(?::(\d{1,5}))?$/
/** Safe key characters (AWS's "safe" set) for each segment of a prefix. */
const PREFIX_SEGMENT = /^[A-Za-z0-9!_.*'()-]+$/

function invalid (text: string, reason: string): NarwhalError {
  return new NarwhalError('NARWHAL_STORAGE_URL_INVALID', `storage URL ${JSON.stringify(text)}: ${reason}`)
}

/** Parses an `s3://` storage URL; throws NARWHAL_STORAGE_URL_INVALID naming the part at fault. */
export function parseS3Url (text: string): S3Location {
  if (!text.startsWith('s3://')) throw invalid(text, 'expected s3://BUCKET?region=R&endpoint=HOST[:PORT]&scheme=http|https')
  const rest = text.slice('s3://'.length)
  const query = rest.indexOf('?')
  const authority = query < 0 ? rest : rest.slice(0, query)
  if (authority.includes('/')) {
    throw invalid(text, `the bucket is followed by a path ${JSON.stringify(authority.slice(authority.indexOf('/')))}; ` +
      'a key prefix goes in the prefix= parameter')
  }
  if (authority.includes('#')) throw invalid(text, 'a fragment (#…) has no meaning here')
  const bucket = authority
  if (!BUCKET.test(bucket) || bucket.includes('..') || /^\d+\.\d+\.\d+\.\d+$/.test(bucket)) {
    throw invalid(text, `bucket name ${JSON.stringify(bucket)} is not a valid S3 bucket name ` +
      '(3 to 63 characters: lowercase letters, digits, "." and "-", starting and ending with a letter or digit)')
  }

  const params = new Map<Parameter, string>()
  if (query >= 0) {
    const search = new URLSearchParams(rest.slice(query + 1))
    const unknown = [...new Set([...search.keys()].filter(k => !(S3_URL_PARAMETERS as readonly string[]).includes(k)))]
    if (unknown.length > 0) {
      throw invalid(text, `unknown parameter${unknown.length === 1 ? '' : 's'} ${unknown.map(k => JSON.stringify(k)).join(', ')} ` +
        `(known: ${S3_URL_PARAMETERS.join(', ')})`)
    }
    for (const [key, value] of search) {
      const name = key as Parameter
      if (params.has(name)) throw invalid(text, `parameter ${name} is given more than once`)
      params.set(name, value)
    }
  }

  const region = params.get('region') ?? DEFAULT_REGION
  if (!REGION.test(region)) throw invalid(text, `region ${JSON.stringify(region)} is not a region name (like us-east-1)`)

  const scheme = params.get('scheme')
  if (scheme !== undefined && scheme !== 'http' && scheme !== 'https') {
    throw invalid(text, `scheme ${JSON.stringify(scheme)} is neither http nor https`)
  }
  const endpoint = parseEndpoint(text, params.get('endpoint'), scheme)

  const style = params.get('addressing-style') ?? 'auto'
  if (style !== 'auto' && style !== 'path' && style !== 'virtual') {
    throw invalid(text, `addressing-style ${JSON.stringify(style)} is not auto, path or virtual`)
  }
  if (style === 'virtual' && bucket.includes('.')) {
    throw invalid(text, 'addressing-style virtual needs a bucket name without "." (it becomes part of a host name)')
  }
  // Nix's rule for auto: path-style for a custom endpoint, and for names with dots (TLS wildcard).
  const forcePathStyle = style === 'path' || (style === 'auto' && (endpoint !== undefined || bucket.includes('.')))

  const profile = params.get('profile')
  if (profile !== undefined && profile.trim() === '') throw invalid(text, 'profile is empty')

  return { bucket, region, endpoint, forcePathStyle, profile, prefix: parsePrefix(text, params.get('prefix')) }
}

function parseEndpoint (text: string, endpoint: string | undefined, scheme: string | undefined): string | undefined {
  if (endpoint === undefined) {
    if (scheme !== undefined && scheme !== 'https') throw invalid(text, 'scheme http needs an endpoint (AWS S3 itself is reached over https)')
    return undefined
  }
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(endpoint)) {
    // A whole URL, as Nix also accepts: its scheme is the one used.
    let url: URL
    try {
      url = new URL(endpoint)
    } catch {
      throw invalid(text, `endpoint ${JSON.stringify(endpoint)} is not a URL`)
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw invalid(text, `endpoint ${JSON.stringify(endpoint)}: only http and https`)
    if (scheme !== undefined && url.protocol !== scheme + ':') {
      throw invalid(text, `scheme ${scheme} contradicts the endpoint ${JSON.stringify(endpoint)}; give the scheme once`)
    }
    if (url.username !== '' || url.password !== '' || url.search !== '' || url.hash !== '') {
      throw invalid(text, `endpoint ${JSON.stringify(endpoint)} may hold only a scheme, host, port and path (credentials come from the AWS environment)`)
    }
    return url.href.replace(/\/$/, '')
  }
  const match = HOST_PORT.exec(endpoint)
  const port = match?.[1]
  if (match === null || (port !== undefined && (Number(port) < 1 || Number(port) > 65535))) {
    throw invalid(text, `endpoint ${JSON.stringify(endpoint)} is not HOST[:PORT] or an http(s) URL`)
  }
  return `${scheme ?? 'https'}://${endpoint}`
}

function parsePrefix (text: string, prefix: string | undefined): string {
  if (prefix === undefined || prefix === '') return ''
  const segments = prefix.replace(/\/$/, '').split('/')
  for (const segment of segments) {
    if (!PREFIX_SEGMENT.test(segment) || segment === '.' || segment === '..') {
      throw invalid(text, `prefix ${JSON.stringify(prefix)}: each "/"-separated part must be non-empty, not "." or "..", ` +
        "and use only letters, digits and !_.*'()-")
    }
  }
  return segments.join('/') + '/'
}
