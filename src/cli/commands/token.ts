/**
 * `narwhal token create|list|revoke`: manage access tokens in the data folder's database. The
 * server reads tokens on every request, so changes apply at once to a running server.
 */
import { generateToken, hashToken, TOKEN_SCOPES, type Scope } from '../../auth/tokens.js'
import { openDataDir } from '../../cache/open-cache.js'
import { CACHE_OPTIONS, CACHE_USAGE, loadCacheConfig } from '../cache-options.js'
import { parse, UsageError } from '../usage.js'

const USAGE = `usage: narwhal token create --scope push|read|admin [--name LABEL] [--expires-days N] ${CACHE_USAGE}\n` +
  `       narwhal token list ${CACHE_USAGE}\n       narwhal token revoke ID ${CACHE_USAGE}`

function isScope (value: string | undefined): value is Scope {
  return TOKEN_SCOPES.some(s => s === value)
}

export async function tokenCommand (args: string[]): Promise<number> {
  const [action, ...rest] = args
  const { values, positionals } = parse(rest, {
    scope: { type: 'string' },
    name: { type: 'string' },
    'expires-days': { type: 'string' },
    ...CACHE_OPTIONS
  }, true)
  const config = loadCacheConfig(values)
  const { metadata, close } = await openDataDir(config)
  try {
    switch (action) {
      case 'create': {
        if (!isScope(values.scope)) throw new UsageError(`--scope must be one of ${TOKEN_SCOPES.join(', ')}\n${USAGE}`)
        let expiresAt: number | null = null
        if (values['expires-days'] !== undefined) {
          const days = Number(values['expires-days'])
          if (!Number.isFinite(days) || days <= 0) throw new UsageError('--expires-days must be a positive number')
          expiresAt = Date.now() + days * 86_400_000
        }
        const token = generateToken()
        await metadata.tokens.insert({ name: values.name ?? `${values.scope}-token`, scope: values.scope, tokenHash: hashToken(token), expiresAt }, Date.now())
        process.stdout.write(token + '\n')
        return 0
      }
      case 'list': {
        const iso = (t: number | null): string => t === null ? '-' : new Date(t).toISOString()
        process.stdout.write('ID\tSCOPE\tNAME\tCREATED\tEXPIRES\tREVOKED\n')
        for (const t of await metadata.tokens.list()) {
          process.stdout.write(`${t.id}\t${t.scope}\t${t.name}\t${iso(t.createdAt)}\t${iso(t.expiresAt)}\t${iso(t.revokedAt)}\n`)
        }
        return 0
      }
      case 'revoke': {
        const id = Number(positionals[0])
        if (positionals.length !== 1 || !Number.isSafeInteger(id)) throw new UsageError(USAGE)
        if (!await metadata.tokens.revoke(id, Date.now())) {
          process.stderr.write(`narwhal token revoke: no live token with id ${id}\n`)
          return 1
        }
        process.stdout.write(`revoked token ${id}\n`)
        return 0
      }
      default:
        throw new UsageError(USAGE)
    }
  } finally {
    await close()
  }
}
