/**
 * The first start on an empty data folder: make the cache usable without reading a manual.
 * With no trusted key configured, a signing key pair is generated in the data folder and its
 * public half trusted; a push token is created; and the lines a user pastes are printed. The
 * token is shown this once and never again (only its hash is stored).
 */
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import type { Config } from '../config/config.js'
import { generateToken, hashToken } from '../auth/tokens.js'
import { loadTrustedKeys, type OpenCache } from '../cache/open-cache.js'
import type { MetadataStore } from '../db/metadata-store.js'
import { generateKeyPair } from '../signing/keys.js'
import type { Layout } from '../storage/layout.js'

export interface FirstStartResult {
  generatedPublicKey?: string
  token: string
}

export async function setUpFirstStart (config: Readonly<Config>, layout: Layout, metadata: MetadataStore): Promise<FirstStartResult> {
  const result: FirstStartResult = { token: generateToken() }
  if (config.trustedKeys.length === 0) {
    const pair = generateKeyPair(`${os.hostname()}-narwhal-1`)
    mkdirSync(layout.keysDir, { recursive: true, mode: 0o700 })
    writeFileSync(layout.generatedSecretKey, pair.secretKeyText, { mode: 0o600, flag: 'wx' })
    chmodSync(layout.generatedSecretKey, 0o600)
    writeFileSync(layout.generatedPublicKey, pair.publicKeyText, { mode: 0o644, flag: 'wx' })
    result.generatedPublicKey = pair.publicKeyText
  }
  await metadata.tokens.insert({ name: 'first-start', scope: 'push', tokenHash: hashToken(result.token), expiresAt: null }, Date.now())
  return result
}

export function firstStartMessage (config: Readonly<Config>, layout: Layout, result: FirstStartResult, trustedKeys: string[]): string {
  const wildcard = config.listen.host === '0.0.0.0' || config.listen.host === '::'
  const host = wildcard ? os.hostname() : config.listen.host.includes(':') ? `[${config.listen.host}]` : config.listen.host
  const url = `http://${host}:${config.listen.port}`
  const secretKey = result.generatedPublicKey !== undefined ? layout.generatedSecretKey : 'YOUR-SECRET-KEY-FILE'
  return [
    '',
    `narwhal: first start; set up ${layout.dataDir}`,
    '',
    '  On developer machines, in nix.conf:',
    `    extra-substituters = ${url}`,
    `    extra-trusted-public-keys = ${trustedKeys.join(' ')}`,
    '',
    '  On the machine that pushes (the token below is shown only this once):',
    `    netrc line (e.g. in /etc/nix/netrc):  machine ${host} login narwhal password ${result.token}`,
    `    secret key file:                      ${secretKey}`,
    `    push:  nix copy --to '${url}?secret-key=${secretKey}' PATH`,
    '',
    '  More tokens: narwhal token create --scope push|read --data ' + layout.dataDir,
    ''
  ].join('\n')
}

/**
 * When `cache` was just created: sets it up (key pair, token), trusts the generated key and
 * returns the message to print once the server listens. Otherwise undefined. Runs in the one
 * process that owns the start (with several workers, the primary), so the token is made and
 * shown once.
 */
export async function firstStart (config: Readonly<Config>, cache: OpenCache): Promise<string | undefined> {
  if (!cache.created) return undefined
  const result = await setUpFirstStart(config, cache.layout, cache.metadata)
  cache.trustedKeys = loadTrustedKeys(config, cache.layout)
  const keyTexts = [...config.trustedKeys, ...(result.generatedPublicKey === undefined ? [] : [result.generatedPublicKey])]
  return firstStartMessage(config, cache.layout, result, keyTexts)
}
