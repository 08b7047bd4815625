/**
 * `narwhal pin add|list|remove`: paths garbage collection must keep, with their whole closure.
 * Pins live in the data folder's database, so they apply at once to a running server's schedule.
 */
import { openDataDir } from '../../cache/open-cache.js'
import type { MetadataStore } from '../../db/metadata-store.js'
import { isValidHashPart, parseStorePath, STORE_DIR } from '../../nix/store-path.js'
import { CACHE_OPTIONS, CACHE_USAGE, loadCacheConfig } from '../cache-options.js'
import { parse, UsageError } from '../usage.js'

const USAGE = `usage: narwhal pin add PATH [--keep-days N] [--note TEXT] ${CACHE_USAGE}\n` +
  `       narwhal pin list ${CACHE_USAGE}\n` +
  `       narwhal pin remove PATH ${CACHE_USAGE}\n` +
  'PATH is a store path (/nix/store/<hash>-<name>) or its 32-character hash part.'

/** The hash part and store path named by PATH; the store path from the cache when only a hash part is given. */
async function resolvePath (text: string | undefined, metadata: MetadataStore): Promise<{ hashPart: string, storePath: string | undefined }> {
  if (text === undefined) throw new UsageError(USAGE)
  if (isValidHashPart(text)) return { hashPart: text, storePath: await metadata.narinfos.storePathOf(text) }
  const full = text.startsWith(STORE_DIR + '/') ? text : `${STORE_DIR}/${text}`
  const { hashPart } = parseStorePath(full.replace(/\/+$/, ''), 'PATH')
  return { hashPart, storePath: full.replace(/\/+$/, '') }
}

function iso (t: number | null): string {
  return t === null ? 'forever' : new Date(t).toISOString()
}

export async function pinCommand (args: string[]): Promise<number> {
  const [action, ...rest] = args
  const { values, positionals } = parse(rest, {
    'keep-days': { type: 'string' },
    note: { type: 'string' },
    ...CACHE_OPTIONS
  }, true)
  const config = loadCacheConfig(values)
  const { metadata, close } = await openDataDir(config)
  const retention = metadata.retention
  try {
    switch (action) {
      case 'add': {
        if (positionals.length !== 1) throw new UsageError(USAGE)
        const { hashPart, storePath } = await resolvePath(positionals[0], metadata)
        const cached = await metadata.narinfos.storePathOf(hashPart)
        if (storePath === undefined) {
          throw new UsageError(`${hashPart} is not in this cache; give the full store path to pin a path before it is uploaded`)
        }
        if (cached !== undefined && cached !== storePath) throw new UsageError(`this cache holds ${cached} for that hash, not ${storePath}`)
        let keepUntil: number | null = null
        if (values['keep-days'] !== undefined) {
          const days = Number(values['keep-days'])
          if (!Number.isFinite(days) || days <= 0) throw new UsageError(`--keep-days: expected a positive number of days, got ${JSON.stringify(values['keep-days'])}`)
          keepUntil = Date.now() + days * 86_400_000
        }
        await retention.addPin({ hashPart, storePath, keepUntil, note: values.note ?? null }, Date.now())
        process.stdout.write(`pinned ${storePath} and its closure ${keepUntil === null ? 'until unpinned' : `until ${iso(keepUntil)}`}\n`)
        if (cached === undefined) process.stderr.write(`note: ${storePath} is not in this cache yet; the pin keeps it once it is uploaded\n`)
        return 0
      }
      case 'list': {
        if (positionals.length !== 0) throw new UsageError(USAGE)
        const now = Date.now()
        process.stdout.write('STORE PATH\tKEEP UNTIL\tCREATED\tNOTE\n')
        for (const pin of await retention.listPins()) {
          const until = pin.keepUntil !== null && pin.keepUntil <= now ? `expired ${iso(pin.keepUntil)}` : iso(pin.keepUntil)
          process.stdout.write(`${pin.storePath}\t${until}\t${iso(pin.createdAt)}\t${pin.note ?? ''}\n`)
        }
        return 0
      }
      case 'remove': {
        if (positionals.length !== 1) throw new UsageError(USAGE)
        const { hashPart } = await resolvePath(positionals[0], metadata)
        if (!await retention.removePin(hashPart)) {
          process.stderr.write(`narwhal pin remove: no pin for ${positionals[0] ?? ''}\n`)
          return 1
        }
        process.stdout.write(`unpinned ${positionals[0] ?? ''}\n`)
        return 0
      }
      default:
        throw new UsageError(USAGE)
    }
  } finally {
    await close()
  }
}
