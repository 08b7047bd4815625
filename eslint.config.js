import neostandard from 'neostandard'

/**
 * The layer rule (README, "Architecture"): what each top folder of src/ may import besides
 * itself. `cli` may import everything; nothing may import `cli`. The same table as the lead's
 * checker (layers.py); a folder not listed here imports nothing but itself.
 */
const LAYERS = {
  nix: ['errors.ts'],
  'errors.ts': [],
  config: ['errors.ts'],
  api: ['nix'],
  types: [],
  signing: ['nix', 'errors.ts'],
  storage: ['nix', 'errors.ts'],
  db: ['nix', 'errors.ts'],
  auth: ['db', 'nix', 'errors.ts'],
  cache: ['storage', 'db', 'nix', 'signing', 'errors.ts', 'config', 'auth'],
  server: ['cache', 'nix', 'signing', 'errors.ts', 'config', 'auth', 'api'],
  pusher: ['nix', 'signing', 'errors.ts', 'api', 'config'],
  upstream: ['nix', 'signing', 'errors.ts', 'config', 'cache', 'storage', 'db']
}

/** The compiled name of an import target: `errors.ts` is imported as `errors.js`. */
function targetPattern (name) {
  return name.endsWith('.ts') ? `${name.slice(0, -3).replaceAll('.', '\\.')}\\.js$` : `${name}(?:/|$)`
}

/**
 * One config block per folder and depth, because imports are relative: from src/server/x.ts a
 * path that climbs one `../` leaves the folder, from src/server/routes/x.ts it takes two. An
 * import that climbs that far must then name an allowed folder (or the folder itself).
 */
function layerRules () {
  const blocks = []
  for (const [layer, allowed] of Object.entries(LAYERS)) {
    const message = `src/${layer} may import only from ${allowed.length > 0 ? allowed.join(', ') : 'itself'} ` +
      '(the layer rule: README, "Architecture")'
    if (layer.endsWith('.ts')) {
      blocks.push({ files: [`src/${layer}`], rules: { 'no-restricted-imports': ['error', { patterns: [{ regex: '^\\.\\.?/', message }] }] } })
      continue
    }
    const permitted = [layer, ...allowed].map(targetPattern).join('|')
    for (let depth = 1; depth <= 4; depth++) {
      const climb = '\\.\\./'.repeat(depth)
      blocks.push({
        files: [`src/${layer}/${'*/'.repeat(depth - 1)}*.ts`],
        rules: { 'no-restricted-imports': ['error', { patterns: [{ regex: `^${climb}(?!${permitted})`, message }] }] }
      })
    }
  }
  return blocks
}

/**
 * The configuration's schema (TypeBox, ~13 MiB of RSS a process) is loaded only by what loads a
 * configuration: the CLI's loaders and the pusher's. Everything else, the workers of `serve
 * --workers N` included, takes the loaded values' types (`import type`, erased) and ConfigError
 * from config/values.ts.
 */
const schemaLoaders = ['src/config/**', 'src/cli/cache-options.ts', 'src/cli/commands/export.ts', 'src/pusher/config.ts']
const schemaRule = {
  files: ['src/**/*.ts'],
  ignores: schemaLoaders,
  rules: {
    '@typescript-eslint/no-restricted-imports': ['error', {
      patterns: [{
        regex: '(^|/)config/(config|settings|upstreams)\\.js$',
        allowTypeImports: true,
        message: 'only the configuration loaders load the schema (TypeBox); use `import type`, and ConfigError from config/values.js'
      }]
    }]
  }
}

export default [
  ...neostandard({ ts: true, ignores: ['dist/**', 'node_modules/**', 'data/**'] }),
  schemaRule,
  {
    rules: {
      'n/prefer-node-protocol': 'error',
      // Only the CLI decides the exit status (src/cli/main.ts sets process.exitCode).
      'n/no-process-exit': 'error'
    }
  },
  ...layerRules()
]
