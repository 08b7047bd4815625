/**
 * `narwhal gc`: one garbage collection on a data folder, with the policy from the flags or else
 * from the configuration's gc section. Safe while `narwhal serve` runs on the same folder: each
 * batch of removals is one short write transaction that re-checks its plan.
 */
import { collectGarbage, type GcReport } from '../../cache/gc.js'
import { openDataDir } from '../../cache/open-cache.js'
import { runSingleWriter } from '../../cache/single-writer.js'
import { DURATION_HELP, formatBytes, parseDuration, parseSize, SIZE_HELP } from '../../config/units.js'
import { narUrl } from '../../nix/nar-url.js'
import { CACHE_OPTIONS, CACHE_USAGE, loadCacheConfig } from '../cache-options.js'
import { parse, UsageError } from '../usage.js'

const USAGE = 'usage: narwhal gc [--max-size SIZE] [--older-than DURATION] [--keep-recent DURATION] [--dry-run] [-v] ' + CACHE_USAGE

function sizeFlag (value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined
  const bytes = parseSize(value)
  if (bytes === undefined) throw new UsageError(`${flag}: expected ${SIZE_HELP}, got ${JSON.stringify(value)}\n${USAGE}`)
  return bytes
}

function durationFlag (value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined
  const ms = parseDuration(value)
  if (ms === undefined) throw new UsageError(`${flag}: expected ${DURATION_HELP}, got ${JSON.stringify(value)}\n${USAGE}`)
  return ms
}

const plural = (n: number, word: string): string => `${n} ${word}${n === 1 ? '' : 's'}`
const bytesText = (n: number): string => n < 1024 ? `${n} bytes` : `${formatBytes(n)} (${n} bytes)`

/** The report as printed: store paths with -v, then one summary line and any notes. */
export function formatGcReport (report: GcReport, options: { verbose: boolean, maxSize: number | null, olderThan: number | null, keepRecent: string }): string {
  const lines: string[] = []
  const verb = report.dryRun ? 'would remove' : 'removed'
  if (options.verbose) {
    for (const p of [...report.storePaths].sort()) lines.push(`${verb} ${p}`)
    for (const f of report.unnamedNarFiles) lines.push(`${verb} ${narUrl(f.fileHash, f.compression)} (no narinfo names it)`)
  }
  const narFiles = report.narFiles.length + report.unnamedNarFiles.length
  const unnamed = report.unnamedNarFiles.length > 0 ? ` (${report.unnamedNarFiles.length} named by no narinfo)` : ''
  lines.push(`${report.dryRun ? 'narwhal gc --dry-run' : 'narwhal gc'}: ${verb} ${plural(report.storePaths.length, 'store path')} and ` +
    `${plural(narFiles, 'NAR file')}${unnamed}, ${report.dryRun ? 'freeing' : 'freed'} ${bytesText(report.bytes)}; ` +
    `NAR files ${report.dryRun ? 'would then take' : 'now take'} ${bytesText(report.remainingBytes)}`)
  if (report.expiredPins > 0) lines.push(`deleted ${plural(report.expiredPins, 'expired pin')}`)
  if (report.kept > 0) {
    lines.push(`kept ${plural(report.kept, 'planned store path')}: used, pinned or newly referenced while gc ran`)
  }
  if (options.maxSize !== null && report.maxSizeReached === false) {
    lines.push(`the size limit of ${bytesText(options.maxSize)} is not reached: the rest is pinned, used within the last ` +
      `${options.keepRecent} (--keep-recent), or needed by such paths`)
  }
  if (options.maxSize === null && options.olderThan === null) {
    lines.push('no --max-size or --older-than (nor gc.maxSize or gc.olderThan configured): only NAR files named by no narinfo were collected')
  }
  return lines.join('\n') + '\n'
}

export async function gcCommand (args: string[]): Promise<number> {
  const { values, positionals } = parse(args, {
    'max-size': { type: 'string' },
    'older-than': { type: 'string' },
    'keep-recent': { type: 'string' },
    'dry-run': { type: 'boolean' },
    verbose: { type: 'boolean', short: 'v' },
    ...CACHE_OPTIONS
  }, true)
  if (positionals.length > 0) throw new UsageError(USAGE)
  const config = loadCacheConfig(values)
  const maxSize = sizeFlag(values['max-size'], '--max-size') ?? config.gc.maxSize
  const olderThan = durationFlag(values['older-than'], '--older-than') ?? config.gc.olderThan
  const keepRecent = durationFlag(values['keep-recent'], '--keep-recent') ?? config.gc.keepRecent
  const cache = await openDataDir(config)
  try {
    const run = await runSingleWriter(cache.metadata, 'gc', async (lost) => await collectGarbage(cache, {
      maxSize,
      olderThan,
      keepRecent,
      upstreams: config.upstreams.map(u => u.url),
      unnamedNarGrace: config.gc.unnamedNarGrace,
      dryRun: values['dry-run'] ?? false,
      trigger: 'cli',
      shouldStop: () => lost.aborted
    }))
    if (run.kind === 'busy') {
      process.stderr.write('narwhal gc: a collection is running at another replica or command; nothing done\n')
      return 1
    }
    const report = run.value
    process.stdout.write(formatGcReport(report, {
      verbose: values.verbose ?? false,
      maxSize,
      olderThan,
      keepRecent: values['keep-recent'] ?? `${keepRecent / 60_000}m`
    }))
    return 0
  } finally {
    await cache.close()
  }
}
