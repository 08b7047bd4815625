/**
 * Which token a request presents, as the token table says at this moment: a token created or
 * revoked with `narwhal token …` counts at once, without a restart.
 */
import { hashToken } from '../auth/tokens.js'
import type { MetadataStore, TokenRow } from '../db/metadata-store.js'

export type { TokenRow }

/** The token's row when it is known, not revoked and not expired. */
export async function liveToken (metadata: MetadataStore, token: string, now = Date.now()): Promise<TokenRow | undefined> {
  const row = await metadata.tokens.byHash(hashToken(token))
  if (row === undefined || row.revokedAt !== null || (row.expiresAt !== null && row.expiresAt <= now)) return undefined
  return row
}
