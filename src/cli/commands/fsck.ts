/**
 * `narwhal fsck [--repair] [--verify-content] [--grace SECONDS] [--json] [--data DIR]`: checks that
 * the database and the files on disk agree and that every narinfo's closure can be substituted
 * (with --storage s3://, also that the bucket's narinfo objects are the rows' texts); with
 * --repair, removes what cannot be served and everything whose closure that breaks, and
 * republishes or removes narinfo objects.
 *
 * Exit status:
 *   0  the cache was clean
 *   1  problems were found; without --repair nothing was changed, with --repair all were repaired
 *   2  bad usage, or fsck could not run (no database, unreadable files); nothing was changed
 *   3  --repair left problems it does not repair (listed as "left:")
 *
 * Output: one line per problem on stdout (`KIND SUBJECT: REASON`), then what --repair removed (or,
 * without it, would remove), then a summary line. --json prints one JSON document instead.
 */
import { existsSync } from 'node:fs'
import { openDataDir, type DataDir } from '../../cache/open-cache.js'
import { runSingleWriter } from '../../cache/single-writer.js'
import { checkCache, DEFAULT_GRACE_MS, repairCache, type FsckProgress, type FsckReport, type RepairResult } from '../../cache/fsck.js'
import { formatBytes } from '../../pusher/service.js'
import { layoutFor } from '../../storage/layout.js'
import { CACHE_OPTIONS, CACHE_USAGE, loadCacheConfig } from '../cache-options.js'
import { parse, UsageError } from '../usage.js'

const USAGE = `usage: narwhal fsck [--repair] [--verify-content] [--grace SECONDS] [--json] ${CACHE_USAGE}\n` +
  '  --repair          remove what cannot be served and every narinfo whose closure that breaks;\n' +
  '                    with --storage s3://, also write again or remove the bucket\'s narinfo objects\n' +
  '  --verify-content  read every NAR file back: its sha256 and what it decompresses to\n' +
  '  --grace SECONDS   files in store/tmp, and NAR files without a row, younger than this are\n' +
  '                    taken for uploads in flight and left alone (default 3600; 0 if no server runs)\n' +
  '  exit 0 clean, 1 problems found (with --repair: all repaired), 2 usage error or fsck could not run,\n' +
  '  3 --repair left problems for you (listed as "left:")'

export const EXIT_CLEAN = 0
export const EXIT_PROBLEMS = 1
export const EXIT_CANNOT_RUN = 2
export const EXIT_UNREPAIRED = 3

/** Progress lines on stderr while --verify-content reads a big cache: at most one per interval. */
const PROGRESS_INTERVAL_MS = 10_000

export async function fsckCommand (args: string[]): Promise<number> {
  const { values, positionals } = parse(args, {
    repair: { type: 'boolean' },
    'verify-content': { type: 'boolean' },
    grace: { type: 'string' },
    json: { type: 'boolean' },
    ...CACHE_OPTIONS,
    help: { type: 'boolean', short: 'h' }
  }, true)
  if (values.help === true) { process.stdout.write(USAGE + '\n'); return EXIT_CLEAN }
  if (positionals.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])}\n${USAGE}`)
  let graceMs = DEFAULT_GRACE_MS
  if (values.grace !== undefined) {
    const seconds = Number(values.grace)
    if (values.grace.trim() === '' || !Number.isFinite(seconds) || seconds < 0) {
      throw new UsageError(`--grace: expected a number of seconds, 0 or more (got ${JSON.stringify(values.grace)})\n${USAGE}`)
    }
    graceMs = seconds * 1000
  }
  const config = loadCacheConfig(values)
  const layout = layoutFor(config.dataDir)
  if (config.database === null && !existsSync(layout.database)) {
    process.stderr.write(`narwhal fsck: no cache in ${config.dataDir} (${layout.database} does not exist)\n`)
    return EXIT_CANNOT_RUN
  }
  let cache: DataDir
  try {
    cache = await openDataDir(config, { migrate: false })
  } catch (err) {
    process.stderr.write(`narwhal fsck: cannot open ${config.database === null ? layout.database : 'the cache'}: ${(err as Error).message}\n`)
    return EXIT_CANNOT_RUN
  }
  try {
    const options = { repair: values.repair === true, verifyContent: values['verify-content'] === true, graceMs, json: values.json === true }
    if (!options.repair) return await fsck(cache, options)
    // Repairs delete: one at a time, and none during an export into this database (which holds this lock too).
    const run = await runSingleWriter(cache.metadata, 'fsck', async () => await fsck(cache, options))
    if (run.kind === 'ran') return run.value
    process.stderr.write('narwhal fsck: another fsck --repair, or an export, is running at another replica or command (it holds the database\'s fsck lock); nothing done\n')
    return EXIT_CANNOT_RUN
  } finally {
    await cache.close()
  }
}

/** Checks the cache, then repairs it or says what a repair would do; prints the report and gives the exit status. */
async function fsck (cache: DataDir, options: { repair: boolean, verifyContent: boolean, graceMs: number, json: boolean }): Promise<number> {
  const { verifyContent, graceMs, json } = options
  // A reference an upstream's verified narinfo holds is not missing (pull-through, src/upstream/).
  const parts = { ...cache, upstreamReferences: true }
  let report: FsckReport
  try {
    report = await checkCache(parts, { verifyContent, graceMs, onProgress: progressPrinter() })
  } catch (err) {
    process.stderr.write(`narwhal fsck: ${(err as Error).message}\nnothing was changed\n`)
    return EXIT_CANNOT_RUN
  }
  let repair: RepairResult
  try {
    repair = await repairCache(parts, report.problems, { dryRun: !options.repair })
  } catch (err) {
    process.stdout.write(formatReport(report, undefined))
    process.stderr.write(`narwhal fsck: repair stopped: ${(err as Error).message}\n` +
      'what was removed before that stays removed; run narwhal fsck again to see what is left\n')
    return EXIT_UNREPAIRED
  }
  process.stdout.write(json ? JSON.stringify({ ...report, repair }, null, 2) + '\n' : formatReport(report, repair))
  if (report.problems.length === 0) return EXIT_CLEAN
  return repair.dryRun || repair.unrepaired.length === 0 ? EXIT_PROBLEMS : EXIT_UNREPAIRED
}

function progressPrinter (): (p: FsckProgress) => void {
  let last = Date.now()
  return (p) => {
    if (Date.now() - last < PROGRESS_INTERVAL_MS) return
    last = Date.now()
    process.stderr.write(`narwhal fsck: verified ${p.files}/${p.totalFiles} NAR files, ` +
      `${formatBytes(p.bytes)} of ${formatBytes(p.totalBytes)}\n`)
  }
}

export function formatReport (report: FsckReport, repair: RepairResult | undefined): string {
  const out: string[] = []
  for (const p of report.problems) out.push(`${p.kind} ${p.subject}: ${p.reason}`)
  if (repair === undefined) return out.join('\n') + '\n'
  const verb = repair.dryRun ? 'would remove' : 'removed'
  for (const storePath of repair.removal.storePaths) out.push(`${verb} ${storePath}`)
  for (const f of repair.removal.narFiles) out.push(`${verb} NAR file ${f.fileHash} (${f.fileSize} bytes)`)
  for (const file of repair.deletedFiles) out.push(`${repair.dryRun ? 'would delete' : 'deleted'} ${file}`)
  for (const storePath of repair.republished) out.push(`${repair.dryRun ? 'would republish' : 'republished'} the narinfo of ${storePath}`)
  for (const p of repair.unrepaired) out.push(`left: ${p.subject}`)
  for (const file of report.inFlight) out.push(`in flight (younger than the grace period, left alone): ${file}`)
  const { checked } = report
  let summary = `checked ${checked.narinfos} narinfos and ${checked.narFiles} NAR files (${formatBytes(checked.narFileBytes)}` +
    `${checked.contentVerified ? ', content verified' : ', sizes only; --verify-content reads them'})` +
    `${checked.narinfoObjects === undefined ? '' : ` against ${checked.narinfoObjects} narinfo objects in the bucket`}: `
  if (report.problems.length === 0) {
    summary += 'clean'
  } else {
    summary += `${report.problems.length} problem${report.problems.length === 1 ? '' : 's'}; ` +
      `${repair.dryRun ? '--repair would remove' : 'removed'} ${repair.removal.storePaths.length} store paths, ` +
      `${repair.removal.narFiles.length} NAR files (${formatBytes(repair.removal.bytes)}) and ` +
      `${repair.deletedFiles.length} other files` +
      (repair.republished.length > 0 ? `, ${repair.dryRun ? 'would republish' : 'republished'} ${repair.republished.length} narinfos` : '') +
      (repair.unrepaired.length > 0 ? `; ${repair.unrepaired.length} left for you` : '')
  }
  out.push(summary)
  return out.join('\n') + '\n'
}
