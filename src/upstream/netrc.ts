/**
 * The credentials a netrc file gives for one host, read the way curl (and so Nix's
 * `netrc-file`) reads it: whitespace-separated tokens, `machine NAME` entries with `login` and
 * `password`, and a `default` entry for every other host.
 */
import { readFileSync } from 'node:fs'
import { ConfigError } from '../config/values.js'

export interface NetrcEntry { login: string, password: string }

export function parseNetrc (text: string, host: string): NetrcEntry | undefined {
  const tokens = text.split(/\s+/).filter(t => t !== '')
  let current: 'match' | 'other' | undefined
  let matched: Partial<NetrcEntry> | undefined
  let fallback: Partial<NetrcEntry> | undefined
  for (let i = 0; i < tokens.length; i++) {
    const token = tokens[i]
    if (token === 'machine') {
      current = tokens[++i] === host ? 'match' : 'other'
      if (current === 'match') matched ??= {}
    } else if (token === 'default') {
      current = undefined
      fallback ??= {}
    } else if ((token === 'login' || token === 'password') && i + 1 < tokens.length) {
      const value = tokens[++i] ?? ''
      const target = current === 'match' ? matched : current === undefined ? fallback : undefined
      if (target !== undefined) target[token] = value
    }
  }
  const entry = matched ?? fallback
  return entry?.login !== undefined && entry.password !== undefined ? { login: entry.login, password: entry.password } : undefined
}

/** The Authorization header for `host` from a netrc file; `key` names the setting in errors. */
export function netrcAuthorization (file: string, host: string, key: string): string {
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch (err) {
    throw new ConfigError(`${key}: ${file} cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'})`)
  }
  const entry = parseNetrc(text, host)
  if (entry === undefined) throw new ConfigError(`${key}: ${file} has no login and password for ${host}`)
  return 'Basic ' + Buffer.from(`${entry.login}:${entry.password}`).toString('base64')
}
