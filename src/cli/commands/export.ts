/**
 * `narwhal export [--data DIR] [--storage s3://BUCKET?…] [--database postgres://…]`: makes the
 * cache at --storage and --database out of the single-node cache in the data folder (its SQLite
 * file and NAR folder), so that `narwhal serve --database URL --storage URL` replicas serve what
 * the single server served. Here, unlike every other command, --database and --storage name the
 * target (the same URLs the replicas are given); the source is always the data folder, and
 * NARWHAL_DATABASE_URL, NARWHAL_STORAGE_URL and the config file's database and storage are not read.
 *
 *   --storage only     the NARs, narinfos and small files into the bucket, laid out as a Nix
 *                      binary cache (cache/export-to-bucket.ts); the rows stay in the SQLite file
 *   --database too     then the rows into PostgreSQL (cache/move-cache.ts): a narinfo's row only
 *                      once its NAR is in the bucket and its references' rows are in
 *   --database only    the rows into PostgreSQL, the NARs staying in the data folder
 *                      (`serve --data DIR --database URL`)
 *
 * Run again to resume after a kill or to catch up; nothing is written twice. One export at a time
 * into a database (its advisory lock, cache/single-writer.ts): a second stops at once, exit 2; so
 * does an export while a replica of that database runs gc or fsck --repair, and those answer busy during an export. A database
 * that holds another cache is refused unless --merge. Into a bucket alone there is nothing to lock,
 * and nothing needs it: exports write the same bytes under the same names and never cut another's
 * upload (cache/export-to-bucket.ts).
 *
 * Exit status: 0 everything moved; 1 some store paths left out or in conflict (listed, with why);
 * 2 bad usage or the move could not run (the message names the step).
 */
import { existsSync, readFileSync, realpathSync } from 'node:fs'
import { exportToBucket, type ExportCounts, type ExportResult } from '../../cache/export-to-bucket.js'
import { beginMove, moveRows, moveStep, type MoveOptions, type MoveResult } from '../../cache/move-cache.js'
import { openDataDir, type DataDir } from '../../cache/open-cache.js'
import { runSingleWriters, type SingleWriterJob } from '../../cache/single-writer.js'
import { loadConfig } from '../../config/config.js'
import { formatBytes } from '../../config/units.js'
import { parseDatabaseUrl, type PostgresLocation } from '../../db/database-url.js'
import type { LoadCounts } from '../../db/metadata-store.js'
import { NarwhalError } from '../../errors.js'
import { layoutFor } from '../../storage/layout.js'
import { S3Objects } from '../../storage/s3-objects.js'
import { parseS3Url, type S3Location } from '../../storage/s3-url.js'
import { parse, UsageError } from '../usage.js'

const USAGE = 'usage: narwhal export [--data DIR] [--config FILE] [--storage s3://BUCKET?region=R&endpoint=HOST[:PORT]&scheme=http|https[&prefix=P]]\n' +
  '                      [--database postgres://USER[:PASSWORD]@HOST[:PORT]/DB] [--merge] [--jobs N] [--batch N] [--json] [-v]\n' +
  '  makes the cache at --storage/--database (the URLs replicas are given) out of the single-node cache in the\n' +
  '  data folder: --storage copies NARs, narinfos and logs into the bucket as a Nix binary cache; --database\n' +
  '  moves the rows (narinfos, NAR files, tokens, pins, read times, provenance, audit log, upstream records,\n' +
  '  logs) into PostgreSQL, each narinfo only after its NAR and references. Run it again to resume or catch up:\n' +
  '  nothing is written twice. The bucket and the database must exist (narwhal creates neither).\n' +
  '  One export at a time into a database: a second one started meanwhile stops at once (exit 2), nothing done.\n' +
  '  While it runs, gc and fsck --repair at replicas of that database answer busy (it holds their locks too). It removes only unfinished\n' +
  '  uploads older than six hours (as serve does): another export or a replica may be uploading into the bucket.\n' +
  '  Credentials: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE or profile= in the URL.\n' +
  '  --merge    go on into a database that holds another cache (its paths are kept as they are)\n' +
  '  --jobs N   NAR uploads at once (default 4)\n' +
  '  --batch N  rows per PostgreSQL transaction (default 200)\n' +
  '  -v         one line per step, object written and narinfo row moved\n' +
  '  exit 0 everything moved, 1 some store paths left out (listed), 2 usage error or could not run'

interface Output { objects: ExportResult | null, rows: MoveResult | null }

/** What holds the lock an export found taken in the database `db`. */
function busyWith (job: SingleWriterJob, db: string): string {
  switch (job) {
    case 'export': return `another export into ${db} is running`
    case 'gc': return `a gc is running at a replica of ${db}`
    case 'fsck': return `an fsck --repair is running at a replica of ${db}`
    case 'migrate': return `a migration of ${db} is running`
  }
}

function whole (text: string | undefined, flag: string, max: number): number | undefined {
  if (text === undefined) return undefined
  const n = Number(text)
  if (!Number.isInteger(n) || n < 1 || n > max) throw new UsageError(`${flag}: expected a whole number from 1 to ${max} (got ${JSON.stringify(text)})`)
  return n
}

/** The flags, checked. */
interface ExportOptions {
  bucketLocation: S3Location | undefined
  /** --database as given, and parsed: always PostgreSQL. */
  databaseUrl: string | undefined
  database: PostgresLocation | undefined
  dataDir: string | undefined
  configFile: string | undefined
  merge: boolean
  jobs: number | undefined
  batch: number | undefined
  json: boolean
  log: (line: string) => void
}

/** The flags, checked (a UsageError names the one that is wrong), or 'help' when only the usage is asked for. */
function parseOptions (args: string[]): ExportOptions | 'help' {
  const { values, positionals } = parse(args, {
    storage: { type: 'string' },
    data: { type: 'string' },
    database: { type: 'string' },
    config: { type: 'string' },
    merge: { type: 'boolean' },
    jobs: { type: 'string' },
    batch: { type: 'string' },
    json: { type: 'boolean' },
    verbose: { type: 'boolean', short: 'v' },
    help: { type: 'boolean', short: 'h' }
  }, true)
  if (values.help === true) return 'help'
  if (positionals.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])}\n${USAGE}`)
  if (values.storage === undefined && values.database === undefined) {
    throw new UsageError(`say where to: --storage s3://BUCKET?…, --database postgres://…, or both\n${USAGE}`)
  }
  const jobs = whole(values.jobs, '--jobs', 64)
  const batch = whole(values.batch, '--batch', 10_000)
  const bucketLocation = values.storage === undefined ? undefined : parseS3Url(values.storage)
  const database = values.database === undefined ? undefined : parseDatabaseUrl(values.database)
  if (database !== undefined && database.kind !== 'postgres') {
    throw new UsageError(`--database: a cache is moved into PostgreSQL (postgres://USER@HOST[:PORT]/DB), not into a SQLite file (${JSON.stringify(values.database)})`)
  }
  return {
    bucketLocation,
    databaseUrl: values.database,
    database,
    dataDir: values.data,
    configFile: values.config,
    merge: values.merge === true,
    jobs,
    batch,
    json: values.json === true,
    log: values.verbose === true ? (line: string) => { process.stdout.write(line + '\n') } : () => {}
  }
}

export async function exportCommand (args: string[]): Promise<number> {
  const options = parseOptions(args)
  if (options === 'help') { process.stdout.write(USAGE + '\n'); return 0 }
  const { database, bucketLocation } = options
  // Only the data folder (and the priority nix-cache-info states) from the configuration: the target is the flags'.
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => k !== 'NARWHAL_DATABASE_URL' && k !== 'NARWHAL_STORAGE_URL'))
  const config = loadConfig({ configFile: options.configFile, dataDir: options.dataDir }, env)
  const layout = layoutFor(config.dataDir)
  const hasSqlite = existsSync(layout.database)
  if (!hasSqlite && (database === undefined || bucketLocation === undefined)) {
    process.stderr.write(`narwhal export: no cache in ${config.dataDir} (${layout.database} does not exist)\n`)
    return 2
  }

  const output: Output = { objects: null, rows: null }
  // A cache served with `--data DIR --database URL` and no SQLite file has its rows in that database already: only its NARs move.
  const source = await moveStep('opening the cache in the data folder', async () =>
    await openDataDir({ dataDir: config.dataDir, database: hasSqlite ? null : options.databaseUrl }))
  let target: DataDir | undefined
  const bucket = bucketLocation === undefined ? undefined : new S3Objects(bucketLocation)
  try {
    if (database !== undefined && hasSqlite) {
      target = await moveStep(`opening the target database ${database.redacted}`, async () =>
        await openDataDir({ dataDir: config.dataDir, database: options.databaseUrl }))
    }
    // One export at a time into a database (its move record): the replicas' PostgreSQL advisory lock, taken
    // before anything is read or written. And no gc or fsck --repair at a replica meanwhile (their locks): either
    // could remove an object this export wrote or found in the bucket before the narinfo or row naming it is written.
    const run = await runSingleWriters((target ?? source).metadata, ['export', 'gc', 'fsck'], async (lost) => {
      // Checked and recorded before any object is written: a database holding another cache stops the export here.
      const move = target === undefined ? undefined : await beginRowMove(target, layout.database, options)
      if (bucket !== undefined) output.objects = await exportObjects(source, bucket, config.priority, options)
      if (move !== undefined && target !== undefined) {
        // Objects before rows: in the bucket (the export above said which are not), or in the folder that stays.
        const narNotPlaced = bucket !== undefined ? notInBucket(output.objects) : notInFolder(source.blobs, config.dataDir)
        output.rows = await moveTheRows(source, target, move, narNotPlaced, lost, options)
      }
    })
    if (run.kind === 'busy') {
      process.stderr.write(`narwhal export: ${busyWith(run.job, database?.redacted ?? options.databaseUrl ?? '')} ` +
        `(it holds the database's ${run.job} lock); nothing done. Run this one again when it has finished` +
        `${run.job === 'export' ? ': it resumes from where that one stopped' : ''}\n`)
      return 2
    }
    return report(output, options, bucket?.describe(), layout.generatedPublicKey)
  } finally {
    bucket?.close()
    await target?.close()
    await source.close()
  }
}

type RowMove = Awaited<ReturnType<typeof beginMove>>

/** Checks the target database holds no other cache (unless --merge) and records the move, or finds the earlier run. */
async function beginRowMove (target: DataDir, sqliteFile: string, options: ExportOptions): Promise<RowMove> {
  const move = await moveStep('checking the target database', async () =>
    await beginMove(target.metadata, `sqlite:${realpathSync(sqliteFile)}`, { merge: options.merge, now: Date.now() }))
  options.log(move.resumed ? 'the target database holds an earlier run of this move: resuming' : 'the target database is empty: moving')
  return move
}

/** The bucket export: NARs, narinfos and small files, laid out as a Nix binary cache. */
async function exportObjects (source: DataDir, bucket: S3Objects, priority: number, options: ExportOptions): Promise<ExportResult> {
  return await moveStep(`copying NARs, narinfos and logs into ${bucket.describe()}`, async () =>
    await exportToBucket({ metadata: source.metadata, blobs: source.blobs }, bucket, {
      priority,
      jobs: options.jobs,
      onUploaded: (name, bytes) => { options.log(`uploaded ${name} (${bytes} bytes)`) }
    }))
}

type NarNotPlaced = NonNullable<MoveOptions['narNotPlaced']>

function notInBucket (exported: ExportResult | null): NarNotPlaced {
  const leftOut = new Map((exported?.leftOut ?? []).map(l => [l.storePath, l.reason]))
  return async (storePath) => leftOut.get(storePath)
}

function notInFolder (blobs: DataDir['blobs'], dataDir: string): NarNotPlaced {
  return async (_storePath, narFile) => {
    const size = await blobs.size(narFile)
    return size === narFile.fileSize ? undefined : `its NAR file is ${size === undefined ? 'missing' : `${size} bytes, not ${narFile.fileSize},`} in ${dataDir}`
  }
}

/** The row move into PostgreSQL, each narinfo only once narNotPlaced says its NAR is in place. */
async function moveTheRows (source: DataDir, target: DataDir, move: RowMove, narNotPlaced: NarNotPlaced,
  lost: AbortSignal, options: ExportOptions): Promise<MoveResult> {
  const stillHeld = (): void => { if (lost.aborted) throw new NarwhalError('NARWHAL_BUSY', 'the export lock\'s session to PostgreSQL was lost; run the export again') }
  const rows = await moveRows(source.metadata, target.metadata, move.move, {
    batch: options.batch,
    onStep: (step) => { stillHeld(); options.log(`moving ${step}`) },
    onNarinfos: (created) => { for (const storePath of created) options.log(`moved ${storePath}`) },
    narNotPlaced
  })
  return { resumed: move.resumed, ...rows }
}

/** Writes what was done (text or --json) and gives the exit status: 1 when some store path was left out or kept. */
function report (output: Output, options: ExportOptions, bucket: string | undefined, generatedKey: string): number {
  process.stdout.write(options.json ? JSON.stringify(output, null, 2) + '\n' : formatOutput(output, bucket, options.database?.redacted, generatedKey))
  return leftOutCount(output) === 0 ? 0 : 1
}

/** Store paths the export left out of the bucket or the database, or kept as the target had them. */
function leftOutCount (output: Output): number {
  return (output.objects?.leftOut.length ?? 0) + (output.rows?.leftOut.length ?? 0) + (output.rows?.conflicts.length ?? 0)
}

function formatOutput (output: Output, bucket: string | undefined, database: string | undefined, generatedKey: string): string {
  const objects = (what: string, c: ExportCounts): string =>
    `  ${what}: ${c.uploaded} uploaded (${formatBytes(c.bytesUploaded)}), ${c.present} already there`
  const rows = (what: string, c: LoadCounts): string => `  ${what}: ${c.created} moved, ${c.present} already there`
  const lines: string[] = []
  const o = output.objects
  if (o !== null) {
    lines.push(`exported to ${bucket ?? ''}`, objects('NARs', o.nars), objects('narinfos', o.narinfos),
      objects('other files (logs, listings, realisations)', o.otherFiles), objects('nix-cache-info', o.cacheInfo))
    if (o.abortedUploads > 0) lines.push(`  removed ${o.abortedUploads} unfinished uploads older than six hours (killed uploads)`)
    if (o.youngUploads > 0) lines.push(`  left ${o.youngUploads} unfinished uploads younger than six hours (in flight, or killed: a later export or serve sweeps them)`)
    for (const l of o.leftOut) lines.push(`left out ${l.storePath}: ${l.reason}`)
  }
  const r = output.rows
  if (r !== null) {
    lines.push(`moved rows into ${database ?? ''}${r.resumed ? ' (resuming an earlier run of this move)' : ''}`,
      rows('narinfos with their NAR files, references, provenance and read times', r.narinfos), rows('tokens', r.tokens),
      rows('pins', r.pins), rows('build logs, listings, realisations', r.auxFiles), rows('upstream records', r.upstreamRecords),
      rows('audit log entries', r.auditEntries), rows('gc runs', r.gcRuns))
    for (const l of r.leftOut) lines.push(`left out ${l.storePath}: ${l.reason}`)
    for (const c of r.conflicts) lines.push(`kept the target's ${c.storePath}: ${c.reason}`)
    if (existsSync(generatedKey)) {
      lines.push(`replicas must trust this server's generated uploader key (their data folders are scratch): trustedKeys or NARWHAL_TRUSTED_KEYS = ${readFileSync(generatedKey, 'utf8').trim()}`)
    }
  }
  const problems = leftOutCount(output)
  if (problems > 0) lines.push(`${problems} store paths left out or kept; narwhal fsck says what is wrong with the cache`)
  return lines.join('\n') + '\n'
}
