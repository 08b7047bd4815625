/**
 * What the pusher asks the local Nix store, through the legacy `nix-store` commands (no
 * experimental feature needed) and one `nix path-info --json --recursive` (which gives the whole
 * runtime closure with hashes, sizes, references, deriver and existing signatures in one process).
 *
 *   outputsOf(drv)      nix-store --query --outputs DRV          (OUT_PATHS is empty on Nix 2.8)
 *   invalidPaths(ps)    nix-store --check-validity --print-invalid PS   (GC'd paths)
 *   closureInfo(ps)     nix path-info --json --recursive PS
 */
import { execFile } from 'node:child_process'
import path from 'node:path'
import { parseNixHash } from '../nix/hash.js'
import { STORE_DIR } from '../nix/store-path.js'

export interface PathInfo {
  /** Full store path. */
  path: string
  narHash: Buffer
  narSize: number
  /** Base names, self-reference included, as Nix reports them. */
  references: string[]
  /** Base name of the deriver, if known. */
  deriver?: string
  sigs: string[]
  ca?: string
}

export class NixCommandError extends Error {
  readonly stderr: string
  constructor (message: string, stderr: string) {
    super(message)
    this.name = 'NixCommandError'
    this.stderr = stderr
  }
}

const NIX_ENV_CONFIG = 'experimental-features = nix-command'

function nixEnv (): NodeJS.ProcessEnv {
  // The hook runs under the daemon with the daemon's NIX_CONFIG; the pusher only needs the
  // feature flag on top of whatever the machine configures.
  const existing = process.env.NIX_CONFIG
  return { ...process.env, NIX_CONFIG: existing === undefined || existing === '' ? NIX_ENV_CONFIG : `${existing}\n${NIX_ENV_CONFIG}` }
}

export function runNix (file: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { env: nixEnv(), maxBuffer: 256 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err !== null) {
        const firstLine = String(stderr).split('\n').find(l => l.trim() !== '') ?? err.message
        reject(new NixCommandError(`${file} ${args[0] ?? ''} failed: ${firstLine.trim()}`, String(stderr)))
        return
      }
      resolve(String(stdout))
    })
  })
}

function lines (text: string): string[] {
  return text.split('\n').map(l => l.trim()).filter(l => l !== '')
}

export async function outputsOf (drvPath: string): Promise<string[]> {
  return lines(await runNix('nix-store', ['--query', '--outputs', drvPath]))
}

/** The paths among `paths` that are not (or no longer) valid in the local store. */
export async function invalidPaths (paths: string[]): Promise<string[]> {
  if (paths.length === 0) return []
  return lines(await runNix('nix-store', ['--check-validity', '--print-invalid', ...paths]))
}

interface PathInfoJson {
  path: string
  narHash: string
  narSize: number
  references?: string[]
  deriver?: string | null
  signatures?: string[]
  ca?: string | null
  valid?: boolean
}

/**
 * Both shapes of `nix path-info --json`: Nix 2.8 prints an array of objects with a `path` field
 * (an invalid path has `valid: false`); Nix 2.19 and later (2.26 in Debian trixie) print an
 * object keyed by store path (an invalid path maps to null).
 */
export function parsePathInfoJson (text: string): PathInfo[] {
  const parsed = JSON.parse(text) as PathInfoJson[] | Record<string, Omit<PathInfoJson, 'path'> | null>
  const raw: PathInfoJson[] = Array.isArray(parsed)
    ? parsed
    : Object.entries(parsed).map(([p, r]) => r === null ? { path: p, narHash: '', narSize: 0, valid: false } : { ...r, path: p })
  return raw.map(r => {
    if (r.valid === false) throw new NixCommandError(`${r.path} is not valid`, '')
    const info: PathInfo = {
      path: r.path,
      narHash: parseNixHash(r.narHash, `nix path-info narHash of ${r.path}`),
      narSize: r.narSize,
      references: (r.references ?? []).map(ref => baseName(ref)),
      sigs: r.signatures ?? []
    }
    if (r.deriver !== undefined && r.deriver !== null && r.deriver !== '') info.deriver = baseName(r.deriver)
    if (r.ca !== undefined && r.ca !== null && r.ca !== '') info.ca = r.ca
    return info
  })
}

export async function closureInfo (paths: string[]): Promise<PathInfo[]> {
  if (paths.length === 0) return []
  return parsePathInfoJson(await runNix('nix', ['path-info', '--json', '--recursive', ...paths]))
}

export function baseName (storePath: string): string {
  return storePath.startsWith(STORE_DIR + '/') ? storePath.slice(STORE_DIR.length + 1) : path.basename(storePath)
}

export function hashPartOf (storePath: string): string {
  return baseName(storePath).slice(0, 32)
}

/**
 * Orders paths so every path comes after the paths it references (self-references ignored),
 * ties broken by path for a stable order. References outside `infos` are ignored.
 */
export function topologicalOrder (infos: PathInfo[]): PathInfo[] {
  const byBase = new Map(infos.map(i => [baseName(i.path), i]))
  const done = new Set<string>()
  const visiting = new Set<string>()
  const out: PathInfo[] = []
  const visit = (info: PathInfo): void => {
    const base = baseName(info.path)
    if (done.has(base) || visiting.has(base)) return
    visiting.add(base)
    for (const ref of [...info.references].sort()) {
      if (ref === base) continue
      const dep = byBase.get(ref)
      if (dep !== undefined) visit(dep)
    }
    visiting.delete(base)
    done.add(base)
    out.push(info)
  }
  for (const info of [...infos].sort((a, b) => a.path < b.path ? -1 : a.path > b.path ? 1 : 0)) visit(info)
  return out
}
