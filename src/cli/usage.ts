/** Argument parsing shared by the commands: node:util parseArgs in strict mode, with clear errors. */
import { parseArgs, type ParseArgsConfig } from 'node:util'

export class UsageError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'UsageError'
  }
}

export function parse<T extends ParseArgsConfig['options']> (args: string[], options: T, allowPositionals = false) {
  try {
    return parseArgs({ args, options, allowPositionals, strict: true })
  } catch (err) {
    throw new UsageError((err as Error).message)
  }
}
