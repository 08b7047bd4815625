#!/usr/bin/env node
/**
 * The `narwhal` command: a thin dispatcher to one file per command. Only the CLI layer calls
 * listen() or sets the exit code.
 */
import { ConfigError } from '../config/config.js'
import { NarwhalError } from '../errors.js'
import { keygenCommand } from './commands/keygen.js'
import { migrateCommand } from './commands/migrate.js'
import { serveCommand } from './commands/serve.js'
import { tokenCommand } from './commands/token.js'
import { UsageError } from './usage.js'

const COMMANDS: Record<string, { run: (args: string[]) => Promise<number>, summary: string }> = {
  serve: { run: serveCommand, summary: 'serve [--config FILE] [--data DIR] [--listen HOST:PORT] [--trusted-key NAME:BASE64]...' },
  keygen: { run: keygenCommand, summary: 'keygen NAME --secret-out FILE --public-out FILE' },
  token: { run: tokenCommand, summary: 'token create --scope push|read|admin [--name LABEL] [--expires-days N] [--data DIR] | token list | token revoke ID' },
  migrate: { run: migrateCommand, summary: 'migrate [--data DIR]   (serve also migrates on start)' }
}

function usage (): string {
  return 'usage: narwhal COMMAND …\n' + Object.values(COMMANDS).map(c => `  narwhal ${c.summary}`).join('\n') + '\n'
}

async function main (argv: string[]): Promise<number> {
  const [name, ...rest] = argv
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(usage())
    return name === undefined ? 2 : 0
  }
  const command = COMMANDS[name]
  if (command === undefined) {
    process.stderr.write(`narwhal: unknown command ${JSON.stringify(name)}\n${usage()}`)
    return 2
  }
  try {
    return await command.run(rest)
  } catch (err) {
    if (err instanceof UsageError || err instanceof ConfigError || err instanceof NarwhalError) {
      process.stderr.write(`narwhal ${name}: ${err.message}\n`)
      return 2
    }
    throw err
  }
}

main(process.argv.slice(2)).then(code => { process.exitCode = code }, (err: unknown) => {
  process.stderr.write(`narwhal: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`)
  process.exitCode = 1
})
