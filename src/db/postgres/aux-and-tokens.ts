/** Aux files (logs, listings, realisations, debuginfo) and tokens in PostgreSQL. */
import type { AuxFile, AuxFileEntry, AuxFileStore, TokenRow, TokenStore } from '../metadata-store.js'
import type { PgPool } from './pool.js'

const TOKEN_COLUMNS = 'id, name, scope, created_at AS "createdAt", expires_at AS "expiresAt", revoked_at AS "revokedAt"'

export function pgAuxFileStore (pool: PgPool): AuxFileStore {
  return {
    get: async (kind, name) => (await pool.query<AuxFile>(
      'SELECT content_type AS "contentType", content_encoding AS "contentEncoding", body FROM aux_files WHERE kind = $1 AND name = $2',
      [kind, name])).rows[0],

    put: async (kind, name, file, now) => {
      await pool.query(
        `INSERT INTO aux_files (kind, name, content_type, content_encoding, body, created_at) VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (kind, name) DO UPDATE SET content_type = excluded.content_type,
           content_encoding = excluded.content_encoding, body = excluded.body`,
        [kind, name, file.contentType, file.contentEncoding, file.body, now])
    },

    page: async (afterId, limit) => (await pool.query<AuxFileEntry>(
      `SELECT id, kind, name, content_type AS "contentType", content_encoding AS "contentEncoding", octet_length(body) AS size
       FROM aux_files WHERE id > $1 ORDER BY id LIMIT $2`, [afterId, limit])).rows
  }
}

/**
 * Tokens are read from the database at every request, never remembered: a token revoked at one
 * replica is refused at every other at once, not when a notification arrives.
 */
export function pgTokenStore (pool: PgPool): TokenStore {
  return {
    insert: async (token, now) => {
      const row = (await pool.query<{ id: number }>(
        'INSERT INTO tokens (name, scope, token_hash, created_at, expires_at) VALUES ($1, $2, $3, $4, $5) RETURNING id',
        [token.name, token.scope, token.tokenHash, now, token.expiresAt])).rows[0]
      if (row === undefined) throw new Error('tokens: INSERT returned no id')
      return row.id
    },
    byHash: async (tokenHash) => (await pool.query<TokenRow>(`SELECT ${TOKEN_COLUMNS} FROM tokens WHERE token_hash = $1`, [tokenHash])).rows[0],
    list: async () => (await pool.query<TokenRow>(`SELECT ${TOKEN_COLUMNS} FROM tokens ORDER BY id`)).rows,
    revoke: async (id, now) => (await pool.query('UPDATE tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL', [now, id])).rowCount === 1
  }
}
