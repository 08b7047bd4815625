/**
 * The database URL (`--database`, NARWHAL_DATABASE_URL, config `database`): which metadata store
 * a cache uses. The one place that reads it.
 *
 *   postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?sslmode=disable|require|verify-full]
 *   postgresql://…                    the same (libpq accepts both schemes)
 *   anything without "://"            a SQLite file (the default is the one in the data folder)
 *
 * A password may instead come from PGPASSWORD or ~/.pgpass, as for every libpq program. Unknown
 * query parameters are refused by name: a misspelt sslmode silently ignored would send the
 * password in clear.
 */
import { NarwhalError } from '../errors.js'

export interface PostgresLocation {
  kind: 'postgres'
  host: string
  port: number
  user: string
  /** undefined: PGPASSWORD or ~/.pgpass (node-postgres reads both). */
  password: string | undefined
  database: string
  sslmode: 'disable' | 'require' | 'verify-full'
  /** The URL with its password replaced by "***": what logs and messages show. */
  redacted: string
}

export interface SqliteLocation { kind: 'sqlite', file: string }

export type DatabaseLocation = PostgresLocation | SqliteLocation

const PARAMETERS = ['sslmode'] as const
const SSLMODES = ['disable', 'require', 'verify-full'] as const
const DEFAULT_PORT = 5432

function invalid (shown: string, reason: string): NarwhalError {
  return new NarwhalError('NARWHAL_DATABASE_URL_INVALID', `database URL ${JSON.stringify(shown)}: ${reason}`)
}

/** Parses a database URL; throws NARWHAL_DATABASE_URL_INVALID naming the part at fault. */
export function parseDatabaseUrl (text: string): DatabaseLocation {
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(text)?.[1]?.toLowerCase()
  if (scheme === undefined) {
    if (text.trim() === '') throw invalid(text, 'is empty (expected postgres://USER@HOST[:PORT]/DATABASE or a SQLite file)')
    return { kind: 'sqlite', file: text }
  }
  if (scheme !== 'postgres' && scheme !== 'postgresql') {
    throw invalid(redact(text), `scheme ${scheme}:// is not postgres:// (or a SQLite file's path, without a scheme)`)
  }
  let url: URL
  try {
    url = new URL(text)
  } catch {
    throw invalid(redact(text), 'is not a URL of the form postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE')
  }
  const redacted = redact(text)
  if (url.hostname === '') throw invalid(redacted, 'names no host')
  if (url.username === '') throw invalid(redacted, 'names no user (postgres://USER@HOST/DATABASE)')
  const database = decodeURIComponent(url.pathname.replace(/^\//, ''))
  if (database === '' || database.includes('/')) throw invalid(redacted, 'must name one database as its path (…/DATABASE)')
  if (url.hash !== '') throw invalid(redacted, 'a fragment (#…) has no meaning here')
  const unknown = [...new Set(url.searchParams.keys())].filter(k => !(PARAMETERS as readonly string[]).includes(k))
  if (unknown.length > 0) throw invalid(redacted, `unknown parameter ${unknown.map(k => JSON.stringify(k)).join(', ')} (known: ${PARAMETERS.join(', ')})`)
  const sslmode = url.searchParams.get('sslmode') ?? 'disable'
  if (!(SSLMODES as readonly string[]).includes(sslmode)) throw invalid(redacted, `sslmode ${JSON.stringify(sslmode)} is not one of ${SSLMODES.join(', ')}`)
  return {
    kind: 'postgres',
    // URL keeps IPv6 literals in brackets; the socket wants the bare address.
    host: url.hostname.replace(/^\[(.*)\]$/, '$1'),
    port: url.port === '' ? DEFAULT_PORT : Number(url.port),
    user: decodeURIComponent(url.username),
    password: url.password === '' ? undefined : decodeURIComponent(url.password),
    database,
    sslmode: sslmode as PostgresLocation['sslmode'],
    redacted
  }
}

/** The URL with any password replaced by "***" (also for text that does not parse). */
export function redact (text: string): string {
  return text.replace(/^([a-z][a-z0-9+.-]*:\/\/[^:@/]*):[^@/]*@/i, '$1:***@')
}
