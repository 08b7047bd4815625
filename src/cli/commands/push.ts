/**
 * `narwhal push PATH... [--config FILE]`: push the runtime closures of PATHs now, without the
 * queue, with a progress bar on a terminal. Exit 0 when every path is in the cache afterwards,
 * 1 when a path was refused or the server stayed unreachable.
 */
import { mkdtempSync, realpathSync, rmSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { closureInfo, outputsOf } from '../../pusher/closure.js'
import { loadPusherConfig } from '../../pusher/config.js'
import { ProgressBar } from '../../pusher/progress.js'
import { pushClosure, pushSettings } from '../../pusher/push-closure.js'
import { summarise } from '../../pusher/service.js'
import { loadSecretKeys, readTokenFile } from '../../pusher/signer.js'
import { CacheClient } from '../../pusher/uploader.js'
import { parse, UsageError } from '../usage.js'

export async function pushCommand (args: string[]): Promise<number> {
  const { values, positionals } = parse(args, { config: { type: 'string' } }, true)
  if (positionals.length === 0) throw new UsageError('usage: narwhal push PATH... [--config FILE]')
  const config = loadPusherConfig({ configFile: values.config, requireServer: true, requireKeys: true })
  const keys = loadSecretKeys(config.secretKeyFiles)
  const token = readTokenFile(config.tokenFile)
  const roots: string[] = []
  for (const p of positionals) {
    // ./result symlinks and paths inside a store path resolve to the store path itself.
    let resolved = p
    try { resolved = realpathSync(p) } catch {}
    const match = /^\/nix\/store\/[^/]+/.exec(resolved)
    if (match === null) throw new UsageError(`${p} is not in /nix/store`)
    if (match[0].endsWith('.drv')) roots.push(...await outputsOf(match[0]))
    else roots.push(match[0])
  }
  const client = new CacheClient(config.server, token, config.concurrency + 2)
  const bar = new ProgressBar()
  const tmpDir = mkdtempSync(path.join(os.tmpdir(), 'narwhal-push-'))
  try {
    const infos = await closureInfo(roots)
    const result = await pushClosure(infos, {
      client,
      keys,
      tmpDir,
      ...pushSettings(config),
      requestAttempts: 5,
      backoff: { baseMs: 500, maxMs: Math.min(30_000, config.maxRetryDelaySeconds * 1000) },
      onProgress: p => bar.update(p, p.pathsDone === p.pathsTotal)
    })
    bar.done()
    process.stderr.write(summarise(roots, result) + '\n')
    for (const f of result.failed) process.stderr.write(`  failed ${f.path}: ${f.reason}\n`)
    return result.failed.length > 0 ? 1 : 0
  } catch (err) {
    bar.done()
    process.stderr.write(`narwhal push: ${(err as Error).message}\n`)
    return 1
  } finally {
    rmSync(tmpDir, { recursive: true, force: true })
    await client.close()
  }
}
