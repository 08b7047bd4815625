/**
 * `narwhal audit [--since DURATION] [--path PATH] [--token ID] [--limit N] [--json] [--data DIR]`:
 * the audit log of writes and refusals (cache/audit-log.ts), oldest first. Reads only; works on
 * the database of a running server (entries reach it within a second of their request).
 */
import { existsSync } from 'node:fs'
import { readAudit, type AuditRow } from '../../cache/audit-log.js'
import { openDataDir } from '../../cache/open-cache.js'
import { DURATION_HELP, parseDuration } from '../../config/units.js'
import { isValidHashPart, parseStorePath, STORE_DIR } from '../../nix/store-path.js'
import { layoutFor } from '../../storage/layout.js'
import { CACHE_OPTIONS, CACHE_USAGE, loadCacheConfig } from '../cache-options.js'
import { parse, UsageError } from '../usage.js'

const USAGE = `usage: narwhal audit [--since DURATION] [--path PATH] [--token ID] [--limit N] [--json] ${CACHE_USAGE}\n` +
  '  --since DURATION  only entries this recent (90m, 12h, 30d)\n' +
  '  --path PATH       only writes of this store path (or hash part): its narinfo, and its NAR file while the cache holds it\n' +
  '  --token ID        only requests made with this token (ids as narwhal token list shows them)\n' +
  '  --limit N         the newest N matching entries (default 1000; 0 for all)\n' +
  '  --json            one JSON array instead of lines'

const DEFAULT_LIMIT = 1000

function hashPartOf (text: string): string {
  if (isValidHashPart(text)) return text
  const full = text.startsWith(STORE_DIR + '/') ? text : `${STORE_DIR}/${text}`
  return parseStorePath(full.replace(/\/+$/, ''), '--path').hashPart
}

function line (row: AuditRow): string {
  const token = row.tokenId === null ? '-' : `${row.tokenName ?? ''}#${row.tokenId}`
  const fields = [new Date(row.at).toISOString(), row.outcome, String(row.status), row.code ?? '-', token,
    row.clientAddress ?? '-', row.method, row.subject]
  if (row.reason !== null) fields.push(row.reason)
  // Subjects and reasons may carry client text: no control character reaches the terminal.
  return fields.join('\t').replace(/[\x00-\x08\x0a-\x1f\x7f]/g, '?') // eslint-disable-line no-control-regex
}

export async function auditCommand (args: string[]): Promise<number> {
  const { values, positionals } = parse(args, {
    since: { type: 'string' },
    path: { type: 'string' },
    token: { type: 'string' },
    limit: { type: 'string' },
    json: { type: 'boolean' },
    ...CACHE_OPTIONS,
    help: { type: 'boolean', short: 'h' }
  }, true)
  if (values.help === true) { process.stdout.write(USAGE + '\n'); return 0 }
  if (positionals.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])}\n${USAGE}`)
  let since: number | undefined
  if (values.since !== undefined) {
    const ms = parseDuration(values.since)
    if (ms === undefined) throw new UsageError(`--since: expected ${DURATION_HELP}, got ${JSON.stringify(values.since)}`)
    since = Date.now() - ms
  }
  let tokenId: number | undefined
  if (values.token !== undefined) {
    tokenId = Number(values.token)
    if (!Number.isSafeInteger(tokenId) || tokenId < 1) throw new UsageError(`--token: expected a token id (a positive integer), got ${JSON.stringify(values.token)}`)
  }
  const limit = values.limit === undefined ? DEFAULT_LIMIT : Number(values.limit)
  if (!Number.isSafeInteger(limit) || limit < 0) throw new UsageError(`--limit: expected 0 or a positive integer, got ${JSON.stringify(values.limit)}`)

  const config = loadCacheConfig(values)
  if (config.database === null && !existsSync(layoutFor(config.dataDir).database)) {
    process.stderr.write(`narwhal audit: no cache in ${config.dataDir}\n`)
    return 2
  }
  const { metadata, close } = await openDataDir(config)
  try {
    let hashPart: string | undefined
    let fileHash: string | undefined
    if (values.path !== undefined) {
      hashPart = hashPartOf(values.path)
      const narFileId = (await metadata.narinfos.get(hashPart))?.narFileId
      fileHash = narFileId === undefined ? undefined : (await metadata.narFiles.getById(narFileId))?.fileHash
    }
    // No limit is "all" (AuditFilter); -1 was SQLite's spelling of it, which PostgreSQL refuses.
    const rows = await readAudit(metadata.audit, { since, hashPart, fileHash, tokenId, limit: limit === 0 ? undefined : limit })
    if (values.json === true) process.stdout.write(JSON.stringify(rows.map(r => ({ time: new Date(r.at).toISOString(), ...r })), null, 2) + '\n')
    else for (const row of rows) process.stdout.write(line(row) + '\n')
    return 0
  } finally {
    await close()
  }
}
