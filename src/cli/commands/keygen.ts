/**
 * `narwhal keygen NAME --secret-out FILE --public-out FILE`: the same files as
 * `nix-store --generate-binary-cache-key NAME FILE FILE` (no trailing newline, secret mode 0600),
 * so keys made by either tool work with the other.
 */
import { writeFileSync } from 'node:fs'
import { generateKeyPair } from '../../signing/keys.js'
import { parse, UsageError } from '../usage.js'

export async function keygenCommand (args: string[]): Promise<number> {
  const { values, positionals } = parse(args, {
    'secret-out': { type: 'string' },
    'public-out': { type: 'string' }
  }, true)
  const [name, ...extra] = positionals
  const secretOut = values['secret-out']
  const publicOut = values['public-out']
  if (name === undefined || extra.length > 0 || secretOut === undefined || publicOut === undefined) {
    throw new UsageError('usage: narwhal keygen NAME --secret-out FILE --public-out FILE')
  }
  const pair = generateKeyPair(name)
  // wx: never overwrite an existing key, which would silently orphan everything it signed.
  writeFileSync(secretOut, pair.secretKeyText, { mode: 0o600, flag: 'wx' })
  writeFileSync(publicOut, pair.publicKeyText, { mode: 0o644, flag: 'wx' })
  process.stdout.write(pair.publicKeyText + '\n')
  return 0
}
