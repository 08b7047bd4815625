/**
 * The options every command that opens a cache takes (serve, token, gc, fsck, pin, migrate,
 * audit; export, whose --storage is its target, takes the others): where its configuration file,
 * data folder, database and storage are. Their setting names, environment variables and
 * defaults are in config/config.ts's schema.
 */
import { loadConfig, type Config, type ConfigOverrides } from '../config/config.js'

export const CACHE_OPTIONS = {
  config: { type: 'string' },
  data: { type: 'string' },
  database: { type: 'string' },
  storage: { type: 'string' }
} as const

/** For usage lines. */
export const CACHE_USAGE = '[--data DIR] [--database URL] [--storage URL] [--config FILE]'

export interface CacheOptionValues {
  config?: string | undefined
  data?: string | undefined
  database?: string | undefined
  storage?: string | undefined
}

/** The configuration with these options as flags (`more` adds a command's other ones). */
export function loadCacheConfig (values: CacheOptionValues, more: ConfigOverrides = {}): Readonly<Config> {
  return loadConfig({ configFile: values.config, dataDir: values.data, database: values.database, storage: values.storage, ...more })
}
