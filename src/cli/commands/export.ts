/**
 * `narwhal export --storage s3://BUCKET?… [--data DIR] [--database URL]`: copies a single-node
 * cache into an S3 bucket laid out as a Nix binary cache (cache/export-to-bucket.ts says in what
 * order and why the bucket stays valid if it stops). Run again to resume or to bring the bucket
 * up to date. Here --storage names the target: the cache copied is the configured one (--data,
 * --database, and `storage` from the config file or NARWHAL_STORAGE_URL).
 *
 * Exit status: 0 everything exported; 1 some store paths left out (listed, with why);
 * 2 bad usage or the export could not run (no cache, no such bucket, credentials refused).
 */
import { existsSync } from 'node:fs'
import { exportToBucket, type ExportCounts, type ExportResult } from '../../cache/export-to-bucket.js'
import { openDataDir } from '../../cache/open-cache.js'
import { loadConfig } from '../../config/config.js'
import { formatBytes } from '../../config/units.js'
import { layoutFor } from '../../storage/layout.js'
import { S3Objects } from '../../storage/s3-objects.js'
import { parseS3Url } from '../../storage/s3-url.js'
import { parse, UsageError } from '../usage.js'

const USAGE = 'usage: narwhal export --storage s3://BUCKET?region=R&endpoint=HOST[:PORT]&scheme=http|https[&prefix=P] ' +
  '[--data DIR] [--database URL] [--config FILE] [--jobs N] [--json] [-v]\n' +
  '  copies the cache in the data folder into the bucket as a Nix binary cache; objects already there\n' +
  '  with the right size are skipped, so it can be run again to resume. The bucket must exist.\n' +
  '  At its start it aborts unfinished multipart uploads under nar/ (a killed export leaves them):\n' +
  '  never run two exports into one bucket at once.\n' +
  '  Credentials: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE or profile= in the URL.\n' +
  '  --jobs N   NAR uploads at once (default 4)\n' +
  '  -v         one line per object written\n' +
  '  exit 0 everything exported, 1 some store paths left out (listed), 2 usage error or could not run'

export async function exportCommand (args: string[]): Promise<number> {
  const { values, positionals } = parse(args, {
    storage: { type: 'string' },
    data: { type: 'string' },
    database: { type: 'string' },
    config: { type: 'string' },
    jobs: { type: 'string' },
    json: { type: 'boolean' },
    verbose: { type: 'boolean', short: 'v' },
    help: { type: 'boolean', short: 'h' }
  }, true)
  if (values.help === true) { process.stdout.write(USAGE + '\n'); return 0 }
  if (positionals.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])}\n${USAGE}`)
  if (values.storage === undefined) throw new UsageError(`--storage s3://BUCKET?… is required\n${USAGE}`)
  const jobs = values.jobs === undefined ? undefined : Number(values.jobs)
  if (jobs !== undefined && (!Number.isInteger(jobs) || jobs < 1 || jobs > 64)) {
    throw new UsageError(`--jobs: expected a whole number from 1 to 64 (got ${JSON.stringify(values.jobs)})`)
  }
  const location = parseS3Url(values.storage)
  const config = loadConfig({ configFile: values.config, dataDir: values.data, database: values.database })
  const layout = layoutFor(config.dataDir)
  if (config.database === null && !existsSync(layout.database)) {
    process.stderr.write(`narwhal export: no cache in ${config.dataDir} (${layout.database} does not exist)\n`)
    return 2
  }
  // The source is the data folder's NARs whatever NARWHAL_STORAGE_URL says: --storage is the target.
  const cache = await openDataDir({ dataDir: config.dataDir, database: config.database })
  const bucket = new S3Objects(location)
  try {
    const result = await exportToBucket({ metadata: cache.metadata, blobs: cache.blobs }, bucket, {
      priority: config.priority,
      jobs,
      onUploaded: values.verbose === true ? (name, bytes) => process.stdout.write(`uploaded ${name} (${bytes} bytes)\n`) : undefined
    })
    process.stdout.write(values.json === true ? JSON.stringify(result, null, 2) + '\n' : formatResult(result, bucket.describe()))
    return result.leftOut.length === 0 ? 0 : 1
  } finally {
    bucket.close()
    cache.close()
  }
}

function formatResult (result: ExportResult, where: string): string {
  const line = (what: string, c: ExportCounts): string =>
    `  ${what}: ${c.uploaded} uploaded (${formatBytes(c.bytesUploaded)}), ${c.present} already there`
  return [
    `exported to ${where}`,
    line('NARs', result.nars),
    line('narinfos', result.narinfos),
    line('other files (logs, listings, realisations)', result.otherFiles),
    line('nix-cache-info', result.cacheInfo),
    result.abortedUploads === 0 ? '' : `  aborted ${result.abortedUploads} unfinished multipart uploads of an earlier export`,
    ...result.leftOut.map(l => `left out ${l.storePath}: ${l.reason}`),
    result.leftOut.length === 0 ? '' : `${result.leftOut.length} store paths left out; narwhal fsck says what is wrong with the cache`
  ].filter(l => l !== '').join('\n') + '\n'
}
