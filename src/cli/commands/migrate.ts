/** `narwhal migrate`: apply pending database migrations without serving (serve does it on start). */
import { loadConfig } from '../../config/config.js'
import { openDataDir } from '../../cache/open-cache.js'
import { parse } from '../usage.js'

export async function migrateCommand (args: string[]): Promise<number> {
  const { values } = parse(args, { data: { type: 'string' }, config: { type: 'string' } })
  const config = loadConfig({ configFile: values.config, dataDir: values.data })
  const { created, close } = openDataDir(config.dataDir)
  await close()
  process.stdout.write(`${config.dataDir}: database ${created ? 'created' : 'up to date'}\n`)
  return 0
}
