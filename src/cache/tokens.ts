/**
 * Which token a request presents, as the token table says at this moment: a token created or
 * revoked with `narwhal token …` counts at once, without a restart.
 */
import { hashToken } from '../auth/tokens.js'
import type { Metadata, TokenRow } from '../db/metadata.js'

export type { TokenRow }

/** The token's row when it is known, not revoked and not expired. */
export function liveToken (metadata: Metadata, token: string, now = Date.now()): TokenRow | undefined {
  const row = metadata.tokenByHash(hashToken(token))
  if (row === undefined || row.revokedAt !== null || (row.expiresAt !== null && row.expiresAt <= now)) return undefined
  return row
}
