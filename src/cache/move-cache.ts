/**
 * Moves a cache's rows from one metadata store to another: the embedded SQLite file into
 * PostgreSQL, so replicas (`narwhal serve --database postgres://… --storage s3://…`) serve what
 * the single server served (`narwhal export --database`, cli/commands/export.ts, which puts the
 * objects in place first with export-to-bucket.ts).
 *
 * Order and guards, so the target is a consistent cache whenever the move stops:
 * - the target is checked before anything is written: empty, or holding an earlier (killed or
 *   finished) run of this same move, or told to merge (beginMove records the move first);
 * - tokens, then upstream records (what pulled paths may reference), then narinfos in id order
 *   (the source inserted each only after its references, so references come first): each narinfo
 *   only when its NAR object is in place (the caller says which are not) and with the target's own
 *   insert guards (NAR file live, references present), together with its NAR file row, references,
 *   provenance and read times, in one transaction per batch;
 * - then pins, aux files (build logs, listings, realisations), the audit log and gc history.
 * Every load is idempotent (db/metadata-store.ts, MetadataLoad): a second run changes nothing.
 */
import type {
  DumpedNarFile, DumpedNarinfo, LoadCounts, MetadataDump, MetadataLoad, MetadataStore, MoveRecord, TableCounts
} from '../db/metadata-store.js'
import { NarwhalError } from '../errors.js'

export interface MoveOptions {
  /** Rows per transaction (default 200). */
  batch?: number
  /**
   * Why a NAR file's object is not in place in the target's storage, or undefined when it is.
   * Its narinfo (and so everything referencing it) is left out.
   */
  narNotPlaced?: (storePath: string, narFile: DumpedNarFile) => Promise<string | undefined>
  /** Called after each batch of narinfos is committed, with the store paths it created. */
  onNarinfos?: (created: string[]) => void
  /** Called as each step begins. */
  onStep?: (step: string) => void
  now?: () => number
}

export interface MoveResult {
  /** An earlier run of this move had begun (it is resumed or brought up to date). */
  resumed: boolean
  tokens: LoadCounts
  upstreamRecords: LoadCounts
  narinfos: LoadCounts
  pins: LoadCounts
  auxFiles: LoadCounts
  auditEntries: LoadCounts
  gcRuns: LoadCounts
  /** Store paths not moved, each with why. */
  leftOut: Array<{ storePath: string, reason: string }>
  /** Store paths the target holds with other contents: left as they are there. */
  conflicts: Array<{ storePath: string, reason: string }>
}

const DEFAULT_BATCH = 200

/** Runs one step; a failure names it, keeping its kind. */
export async function moveStep<T> (name: string, work: () => Promise<T>): Promise<T> {
  try {
    return await work()
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err)
    throw new NarwhalError(err instanceof NarwhalError ? err.code : 'NARWHAL_INTERNAL', `${name}: ${message}`, { cause: err })
  }
}

function describeContents (held: TableCounts): string {
  const names: Record<keyof TableCounts, string> = {
    narinfos: 'narinfos',
    narFiles: 'NAR files',
    tokens: 'tokens',
    pins: 'pins',
    auxFiles: 'build logs and other files',
    upstreamRecords: 'upstream records',
    auditEntries: 'audit entries',
    gcRuns: 'gc runs'
  }
  return (Object.keys(names) as Array<keyof TableCounts>).filter(k => held[k] > 0).map(k => `${held[k]} ${names[k]}`).join(', ')
}

/**
 * Checks that `target` may receive the cache `source` names, and records the move there: an
 * empty database, one this move wrote before, or any with `merge`. NARWHAL_CONFLICT otherwise,
 * having written nothing.
 */
export async function beginMove (target: MetadataStore, source: string, options: { merge: boolean, now: number }): Promise<{ move: MoveRecord, resumed: boolean }> {
  const load = loadFacet(target)
  const moves = await load.moves()
  const earlier = moves.find(m => m.source === source)
  if (earlier !== undefined) return { move: earlier, resumed: true }
  const held = await load.contents()
  const what = describeContents(held)
  if (what !== '' && !options.merge) {
    const from = moves.length === 0 ? '' : ` (moved there from ${moves.map(m => m.source.replace(/^sqlite:/, '')).join(', ')})`
    throw new NarwhalError('NARWHAL_CONFLICT', `the target database already holds another cache: ${what}${from}. ` +
      'A move goes into an empty database (narwhal migrate makes one), or one this same cache was moved into before; ' +
      '--merge adds this cache to it (paths it holds already are kept as they are there)')
  }
  return { move: await load.beginMove(source, options.now), resumed: false }
}

function loadFacet (store: MetadataStore): MetadataLoad {
  if (store.load === undefined) throw new NarwhalError('NARWHAL_DATABASE_URL_INVALID', 'a cache can be moved only into PostgreSQL (--database postgres://…)')
  return store.load
}

function dumpFacet (store: MetadataStore): MetadataDump {
  if (store.dump === undefined) throw new NarwhalError('NARWHAL_DATABASE_URL_INVALID', 'a cache can be moved only out of the embedded SQLite file')
  return store.dump
}

type MoveTally = Omit<MoveResult, 'resumed'>

/** Moves every row (see the file comment); `move` from beginMove. */
export async function moveRows (source: MetadataStore, target: MetadataStore, move: MoveRecord, options: MoveOptions = {}): Promise<MoveTally> {
  const dump = dumpFacet(source)
  const load = loadFacet(target)
  const batch = options.batch ?? DEFAULT_BATCH
  const now = options.now ?? Date.now
  const zero = (): LoadCounts => ({ created: 0, present: 0 })
  const result: MoveTally = {
    tokens: zero(), upstreamRecords: zero(), narinfos: zero(), pins: zero(), auxFiles: zero(), auditEntries: zero(), gcRuns: zero(), leftOut: [], conflicts: []
  }
  const step = async <T>(name: string, work: () => Promise<T>): Promise<T> => {
    options.onStep?.(name)
    return await moveStep(name, work)
  }

  const tokenIds = await step('tokens', async () => {
    const loaded = await load.tokens(await dump.tokens())
    add(result.tokens, loaded.counts)
    return loaded.ids
  })
  await step('upstream records', async () => {
    await eachPage('', async (after) => await dump.upstreamRecords(after, batch), r => r.hashPart,
      async (page) => { add(result.upstreamRecords, await load.upstreamRecords(page)) })
  })
  await step('NAR file rows and narinfos', async () => {
    await eachPage(0, async (after) => await dump.narinfos(after, batch), r => r.id,
      async (page) => { await moveNarinfos(page, load, tokenIds, options, result) })
  })
  await step('pins', async () => { add(result.pins, await load.pins(await dump.pins())) })
  await step('build logs, listings and realisations', async () => {
    // Bodies are read with their rows: a smaller page, so a batch of large logs stays small in memory.
    const auxBatch = Math.max(1, Math.floor(batch / 10))
    await eachPage(0, async (after) => await dump.auxFiles(after, auxBatch), r => r.id,
      async (page) => { add(result.auxFiles, await load.auxFiles(page)) })
  })
  await step('audit log', async () => {
    await eachPage(move.auditThrough, async (after) => await dump.audit(after, batch * 5), r => r.id,
      async (page) => { add(result.auditEntries, await load.audit(move.id, page, tokenIds)) })
  })
  await step('gc history', async () => { add(result.gcRuns, await load.gcRuns(move.id, await dump.gcRuns())) })
  await step('recording the move as finished', async () => { await load.finishMove(move.id, now()) })
  result.leftOut.sort((a, b) => a.storePath.localeCompare(b.storePath))
  return result
}

function add (into: LoadCounts, c: LoadCounts): void {
  into.created += c.created
  into.present += c.present
}

/** Reads pages after `first` (each after the last row's key) until an empty one, handing each to `work`. */
async function eachPage<T, K> (first: K, read: (after: K) => Promise<T[]>, keyOf: (row: T) => K, work: (page: T[]) => Promise<void>): Promise<void> {
  for (let after = first; ;) {
    const page = await read(after)
    const last = page[page.length - 1]
    if (last === undefined) return
    await work(page)
    after = keyOf(last)
  }
}

/** One page of narinfos: those whose NAR is in place go to the target in one batch; each outcome is tallied. */
async function moveNarinfos (page: DumpedNarinfo[], load: MetadataLoad, tokenIds: Map<number, number>, options: MoveOptions, result: MoveTally): Promise<void> {
  const ready: Array<DumpedNarinfo & { narFile: DumpedNarFile }> = []
  for (const row of page) {
    const why = await notReady(row, options)
    if (why === undefined) ready.push(row as DumpedNarinfo & { narFile: DumpedNarFile })
    else result.leftOut.push({ storePath: row.storePath, reason: why })
  }
  if (ready.length === 0) return
  const outcomes = await load.narinfos(ready, tokenIds)
  const created: string[] = []
  ready.forEach((row, i) => {
    const outcome = outcomes[i]
    switch (outcome?.kind) {
      case 'created': result.narinfos.created++; created.push(row.storePath); break
      case 'present': result.narinfos.present++; break
      case 'differs':
        result.conflicts.push({ storePath: row.storePath, reason: `the target holds ${outcome.storePath} with NAR hash ${outcome.narHash} under this hash` })
        break
      case 'missing-references':
        result.leftOut.push({ storePath: row.storePath, reason: `its references ${outcome.baseNames.join(', ')} are not in the target (left out, or not in the cache)` })
        break
      case 'nar-file-busy':
        result.leftOut.push({ storePath: row.storePath, reason: 'its NAR file is being uploaded or collected in the target right now: run the move again' })
        break
      default: throw new Error(`no outcome for ${row.storePath}`)
    }
  })
  options.onNarinfos?.(created)
}

/** Why a narinfo cannot be moved as it is in the source, before asking the target. */
async function notReady (row: DumpedNarinfo, options: MoveOptions): Promise<string | undefined> {
  if (row.narFile === undefined) return 'its NAR file row is gone from the source (narwhal fsck says more)'
  if (row.narFile.state !== 'live') return `its NAR file is ${row.narFile.state} in the source (an upload or a collection under way)`
  return await options.narNotPlaced?.(row.storePath, row.narFile)
}
