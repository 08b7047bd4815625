/**
 * The `database` and `storage` settings' URLs (issue 20). The default of each, null, is the
 * embedded one: the SQLite file and the NAR folder in the data folder.
 */
import { invalid } from './settings.js'

const POSTGRES_FORM = 'a postgres://USER[:PASS]@HOST[:PORT]/DB URL (without it: the SQLite file in the data folder)'

/** The URL with its password replaced by `***`, for messages and logs. */
export function redactUrl (text: string): string {
  return text.replace(/^([a-z][a-z0-9+.-]*:\/\/[^:@/?#]*):[^@/?#]*@/i, '$1:***@')
}

/**
 * A PostgreSQL URL, `postgres://USER[:PASS]@HOST[:PORT]/DB` (or `postgresql://`), returned as
 * given; its query (`?sslmode=require`, …) is left to the client. Messages never show the password.
 */
export function checkDatabaseUrl (text: string): string {
  let url: URL
  try {
    url = new URL(text)
  } catch {
    return invalid(`expected ${POSTGRES_FORM}`, redactUrl(text))
  }
  const database = decodeURIComponent(url.pathname.slice(1))
  const problem = url.protocol !== 'postgres:' && url.protocol !== 'postgresql:'
    ? `the scheme ${url.protocol.slice(0, -1)} is not postgres`
    : url.hostname === '' ? 'no host' : url.username === '' ? 'no user' : database === '' || database.includes('/') ? 'no database name (the path must be /DB)' : url.hash !== '' ? 'a fragment (#…) has no meaning here' : undefined
  if (problem !== undefined) invalid(`expected ${POSTGRES_FORM}: ${problem}`, redactUrl(text))
  return text
}

/**
 * An S3 bucket in the form Nix uses, `s3://BUCKET?region=R&endpoint=HOST[:PORT]&scheme=http|https`
 * (plus narwhal's prefix=). Only the scheme is checked here: the whole URL is parsed where the
 * bucket is opened (storage/s3-url.ts, through cache/open-cache.ts), which names the part at fault.
 */
export function checkStorageUrl (text: string): string {
  if (!text.startsWith('s3://')) {
    invalid('expected s3://BUCKET?region=R&endpoint=HOST[:PORT]&scheme=http|https (without it: the data folder)')
  }
  return text
}
