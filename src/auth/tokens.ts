/**
 * Access tokens: how they look, how they are hashed for storage, and how they arrive.
 *
 * A token is `nw_` followed by 32 random bytes in base64url. Only its SHA-256 is stored, and a
 * request's token is looked up by that hash, so neither the stored value nor the time a lookup
 * takes reveals anything about a valid token (the hash of a guess shares no prefix with it).
 *
 * Nix has no setting for bearer tokens, but it sends netrc credentials as HTTP Basic, so the
 * token is accepted as the Basic password (any user name) as well as `Authorization: Bearer`.
 */
import { createHash, randomBytes } from 'node:crypto'

export const TOKEN_SCOPES = ['read', 'push', 'admin'] as const
export type Scope = typeof TOKEN_SCOPES[number]

export function generateToken (): string {
  return 'nw_' + randomBytes(32).toString('base64url')
}

export function hashToken (token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex')
}

/** The token in an Authorization header, or undefined when there is none or it is malformed. */
export function tokenFromAuthorization (header: string | undefined): string | undefined {
  if (header === undefined) return undefined
  const space = header.indexOf(' ')
  if (space < 0) return undefined
  const scheme = header.slice(0, space).toLowerCase()
  const value = header.slice(space + 1).trim()
  if (scheme === 'bearer') return value === '' ? undefined : value
  if (scheme === 'basic') {
    const decoded = Buffer.from(value, 'base64').toString('utf8')
    const colon = decoded.indexOf(':')
    const password = colon < 0 ? '' : decoded.slice(colon + 1)
    return password === '' ? undefined : password
  }
  return undefined
}

/** Whether a token of `held` scope may do what `needed` requires: admin ⊃ push ⊃ read. */
export function scopeAllows (held: Scope, needed: Scope): boolean {
  const rank: Record<Scope, number> = { read: 0, push: 1, admin: 2 }
  return rank[held] >= rank[needed]
}
