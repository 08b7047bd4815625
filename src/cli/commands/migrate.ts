/** `narwhal migrate`: apply pending database migrations without serving (serve does it on start). */
import { openDataDir } from '../../cache/open-cache.js'
import { CACHE_OPTIONS, loadCacheConfig } from '../cache-options.js'
import { parse } from '../usage.js'

export async function migrateCommand (args: string[]): Promise<number> {
  const { values } = parse(args, CACHE_OPTIONS)
  const config = loadCacheConfig(values)
  const { created, close } = openDataDir(config)
  await close()
  process.stdout.write(`${config.dataDir}: database ${created ? 'created' : 'up to date'}\n`)
  return 0
}
