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
 * into a database (its advisory lock, cache/single-writer.ts): a second stops at once, exit 2. A database that
 * holds another cache is refused unless --merge.
 *
 * Exit status: 0 everything moved; 1 some store paths left out or in conflict (listed, with why);
 * 2 bad usage or the move could not run (the message names the step).
 */
import { existsSync, readFileSync, realpathSync } from 'node:fs'
import { exportToBucket, type ExportCounts, type ExportResult } from '../../cache/export-to-bucket.js'
import { beginMove, moveRows, moveStep, type MoveResult } from '../../cache/move-cache.js'
import { openDataDir, type DataDir } from '../../cache/open-cache.js'
import { runSingleWriter } from '../../cache/single-writer.js'
import { loadConfig } from '../../config/config.js'
import { formatBytes } from '../../config/units.js'
import { parseDatabaseUrl } from '../../db/database-url.js'
import type { LoadCounts } from '../../db/metadata-store.js'
import { NarwhalError } from '../../errors.js'
import { layoutFor } from '../../storage/layout.js'
import { S3Objects } from '../../storage/s3-objects.js'
import { parseS3Url } from '../../storage/s3-url.js'
import { parse, UsageError } from '../usage.js'

const USAGE = 'usage: narwhal export [--data DIR] [--config FILE] [--storage s3://BUCKET?region=R&endpoint=HOST[:PORT]&scheme=http|https[&prefix=P]]\n' +
  '                      [--database postgres://USER[:PASSWORD]@HOST[:PORT]/DB] [--merge] [--jobs N] [--batch N] [--json] [-v]\n' +
  '  makes the cache at --storage/--database (the URLs replicas are given) out of the single-node cache in the\n' +
  '  data folder: --storage copies NARs, narinfos and logs into the bucket as a Nix binary cache; --database\n' +
  '  moves the rows (narinfos, NAR files, tokens, pins, read times, provenance, audit log, upstream records,\n' +
  '  logs) into PostgreSQL, each narinfo only after its NAR and references. Run it again to resume or catch up:\n' +
  '  nothing is written twice. The bucket and the database must exist (narwhal creates neither).\n' +
  '  One export at a time into a database: a second one started meanwhile stops at once (exit 2), nothing done.\n' +
  '  At its start it aborts unfinished multipart uploads under nar/: never run two exports into one bucket at once.\n' +
  '  Credentials: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE or profile= in the URL.\n' +
  '  --merge    go on into a database that holds another cache (its paths are kept as they are)\n' +
  '  --jobs N   NAR uploads at once (default 4)\n' +
  '  --batch N  rows per PostgreSQL transaction (default 200)\n' +
  '  -v         one line per step, object written and narinfo row moved\n' +
  '  exit 0 everything moved, 1 some store paths left out (listed), 2 usage error or could not run'

interface Output { objects: ExportResult | null, rows: MoveResult | null }

function whole (text: string | undefined, flag: string, max: number): number | undefined {
  if (text === undefined) return undefined
  const n = Number(text)
  if (!Number.isInteger(n) || n < 1 || n > max) throw new UsageError(`${flag}: expected a whole number from 1 to ${max} (got ${JSON.stringify(text)})`)
  return n
}

export async function exportCommand (args: string[]): Promise<number> {
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
  if (values.help === true) { process.stdout.write(USAGE + '\n'); return 0 }
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
  // Only the data folder (and the priority nix-cache-info states) from the configuration: the target is the flags'.
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => k !== 'NARWHAL_DATABASE_URL' && k !== 'NARWHAL_STORAGE_URL'))
  const config = loadConfig({ configFile: values.config, dataDir: values.data }, env)
  const layout = layoutFor(config.dataDir)
  const log = values.verbose === true ? (line: string) => { process.stdout.write(line + '\n') } : () => {}
  const hasSqlite = existsSync(layout.database)
  if (!hasSqlite && (database === undefined || bucketLocation === undefined)) {
    process.stderr.write(`narwhal export: no cache in ${config.dataDir} (${layout.database} does not exist)\n`)
    return 2
  }

  const output: Output = { objects: null, rows: null }
  // A cache served with `--data DIR --database URL` and no SQLite file has its rows in that database already: only its NARs move.
  const source = await moveStep('opening the cache in the data folder', async () =>
    await openDataDir({ dataDir: config.dataDir, database: hasSqlite ? null : values.database }))
  let target: DataDir | undefined
  const bucket = bucketLocation === undefined ? undefined : new S3Objects(bucketLocation)
  try {
    const moveRowsToo = database !== undefined && hasSqlite
    if (moveRowsToo) {
      target = await moveStep(`opening the target database ${database.redacted}`, async () =>
        await openDataDir({ dataDir: config.dataDir, database: values.database }))
    }
    // One export at a time into a database (its move record, and the bucket's unfinished uploads it aborts
    // at its start): the replicas' PostgreSQL advisory lock, taken before anything is read or written.
    const run = await runSingleWriter((target ?? source).metadata, 'export', async (lost) => {
      const stillHeld = (): void => { if (lost.aborted) throw new NarwhalError('NARWHAL_BUSY', 'the export lock\'s session to PostgreSQL was lost; run the export again') }
      let move: Awaited<ReturnType<typeof beginMove>> | undefined
      if (target !== undefined) {
        // Checked and recorded before any object is written: a database holding another cache stops the export here.
        const opened = target
        move = await moveStep('checking the target database', async () =>
          await beginMove(opened.metadata, `sqlite:${realpathSync(layout.database)}`, { merge: values.merge === true, now: Date.now() }))
        log(move.resumed ? 'the target database holds an earlier run of this move: resuming' : 'the target database is empty: moving')
      }

      if (bucket !== undefined) {
        output.objects = await moveStep(`copying NARs, narinfos and logs into ${bucket.describe()}`, async () =>
          await exportToBucket({ metadata: source.metadata, blobs: source.blobs }, bucket, {
            priority: config.priority,
            jobs,
            onUploaded: (name, bytes) => { log(`uploaded ${name} (${bytes} bytes)`) }
          }))
      }

      if (move !== undefined && target !== undefined) {
        const notInBucket = new Map((output.objects?.leftOut ?? []).map(l => [l.storePath, l.reason]))
        const folder = source.blobs
        const rows = await moveRows(source.metadata, target.metadata, move.move, {
          batch,
          onStep: (step) => { stillHeld(); log(`moving ${step}`) },
          onNarinfos: (created) => { for (const storePath of created) log(`moved ${storePath}`) },
          // Objects before rows: in the bucket (the export above said which are not), or in the folder that stays.
          narNotPlaced: bucket !== undefined
            ? async (storePath) => notInBucket.get(storePath)
            : async (_storePath, narFile) => {
              const size = await folder.size(narFile)
              return size === narFile.fileSize ? undefined : `its NAR file is ${size === undefined ? 'missing' : `${size} bytes, not ${narFile.fileSize},`} in ${config.dataDir}`
            }
        })
        output.rows = { resumed: move.resumed, ...rows }
      }
    })
    if (run.kind === 'busy') {
      const into = database?.redacted ?? values.database ?? ''
      process.stderr.write(`narwhal export: another export into ${into} is running (it holds the database's export lock); nothing done. ` +
        'Run this one again when it has finished: it resumes from where that one stopped\n')
      return 2
    }
    process.stdout.write(values.json === true ? JSON.stringify(output, null, 2) + '\n' : formatOutput(output, bucket?.describe(), database?.redacted, layout.generatedPublicKey))
    const leftOut = (output.objects?.leftOut.length ?? 0) + (output.rows?.leftOut.length ?? 0) + (output.rows?.conflicts.length ?? 0)
    return leftOut === 0 ? 0 : 1
  } finally {
    bucket?.close()
    await target?.close()
    await source.close()
  }
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
    if (o.abortedUploads > 0) lines.push(`  aborted ${o.abortedUploads} unfinished multipart uploads of an earlier export`)
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
  const problems = (o?.leftOut.length ?? 0) + (r?.leftOut.length ?? 0) + (r?.conflicts.length ?? 0)
  if (problems > 0) lines.push(`${problems} store paths left out or kept; narwhal fsck says what is wrong with the cache`)
  return lines.join('\n') + '\n'
}
