#!/usr/bin/env node
/**
 * The `narwhal` command: a thin dispatcher to one file per command. Only the CLI layer calls
 * listen() or sets the exit code.
 */
import { ConfigError } from '../config/values.js'
import { NarwhalError } from '../errors.js'
import { UsageError } from './usage.js'

type Run = (args: string[]) => Promise<number>

/**
 * The command table. Each command's module is loaded only when that command runs: the hook and
 * queue commands must not pay for loading the server (Fastify, SQLite, codecs) at every start.
 */
const COMMANDS: Record<string, { load: () => Promise<Run>, summary: string }> = {
  serve: { load: async () => (await import('./commands/serve.js')).serveCommand, summary: 'serve [--config FILE] [--data DIR] [--database URL] [--storage URL] [--listen HOST:PORT] [--trusted-key NAME:BASE64]... [--workers N|auto] [--upstream URL]... [--upstream-key NAME:BASE64]...' },
  keygen: { load: async () => (await import('./commands/keygen.js')).keygenCommand, summary: 'keygen NAME --secret-out FILE --public-out FILE' },
  token: { load: async () => (await import('./commands/token.js')).tokenCommand, summary: 'token create --scope push|read|admin [--name LABEL] [--expires-days N] | token list | token revoke ID   [--data DIR] [--database URL] [--storage URL]' },
  fsck: { load: async () => (await import('./commands/fsck.js')).fsckCommand, summary: 'fsck [--repair] [--verify-content] [--grace SECONDS] [--json] [--data DIR] [--database URL] [--storage URL]   (exit 0 clean, 1 problems found/repaired, 3 unrepaired)' },
  gc: { load: async () => (await import('./commands/gc.js')).gcCommand, summary: 'gc [--max-size SIZE] [--older-than DURATION] [--keep-recent DURATION] [--dry-run] [-v] [--data DIR] [--database URL] [--storage URL]' },
  pin: { load: async () => (await import('./commands/pin.js')).pinCommand, summary: 'pin add PATH [--keep-days N] [--note TEXT] | pin list | pin remove PATH   [--data DIR] [--database URL] [--storage URL]' },
  export: { load: async () => (await import('./commands/export.js')).exportCommand, summary: 'export [--data DIR] [--storage s3://BUCKET?…] [--database postgres://…] [--merge] [--jobs N] [--batch N] [--json] [-v]   (moves the data folder\'s cache to the bucket and database named: the URLs replicas are given)' },
  audit: { load: async () => (await import('./commands/audit.js')).auditCommand, summary: 'audit [--since DURATION] [--path PATH] [--token ID] [--limit N] [--json] [--data DIR] [--database URL] [--storage URL]   (writes and refusals, oldest first)' },
  migrate: { load: async () => (await import('./commands/migrate.js')).migrateCommand, summary: 'migrate [--data DIR] [--database URL] [--storage URL]   (creates or upgrades the schema, the SQLite file or PostgreSQL\'s; serve also migrates on start)' },
  hook: { load: async () => (await import('./commands/hook.js')).hookCommand, summary: 'hook   (post-build-hook: records $DRV_PATH/$OUT_PATHS in $NARWHAL_QUEUE_DIR, exits 0)' },
  pusher: { load: async () => (await import('./commands/pusher.js')).pusherCommand, summary: 'pusher [--config FILE]   (drains the queue to the server)' },
  push: { load: async () => (await import('./commands/push.js')).pushCommand, summary: 'push PATH... [--config FILE]' },
  queue: { load: async () => (await import('./commands/queue.js')).queueCommand, summary: 'queue status [--config FILE] | queue wait [--timeout SECONDS] [--config FILE]' }
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
    const run = await command.load()
    return await run(rest)
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
