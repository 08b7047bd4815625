/**
 * The metadata store: everything narwhal records about its cache, behind one asynchronous
 * interface so that a network database (PostgreSQL) can sit where the embedded SQLite file sits.
 *
 * Rules of the interface (implemented by every backend):
 * - Every method that reads or writes the database returns a Promise and is atomic on its own.
 *   No transaction spans two calls. What must be checked and written together is one conditional
 *   method that answers with a discriminated outcome (`{ kind: ... }`); the cache layer
 *   (src/cache) decides what an outcome means. Only data-integrity guards live here (a NAR file
 *   is live, references are present, a row is still as the caller saw it); the rules of the
 *   cache (signatures, conflicts, how a narinfo is rewritten, what gc evicts) live in src/cache.
 * - The few synchronous methods answer from memory (or, where the backend can, a synchronous
 *   read); they say "don't know" (undefined) when only a round trip could tell, and the caller
 *   then takes the asynchronous way.
 * - What another process committed is seen by reads within a bound (SQLite: PRAGMA data_version;
 *   PostgreSQL: LISTEN/NOTIFY); nothing of how is exposed.
 *
 * Hashes are nix32 strings, times unix milliseconds, sizes numbers (exact up to 2^53 bytes).
 */
import type { AuxFileKind } from '../nix/binary-cache-files.js'

// ---------------------------------------------------------------------------------------------
// Rows

/**
 * A NAR file's state. 'pending': claimed by an upload, its blob may not be committed yet;
 * 'live': committed, servable, nameable by narinfos; 'deleting': being removed by gc or fsck
 * (its blob may be gone already). Only 'live' files are served or named.
 */
export type NarFileState = 'pending' | 'live' | 'deleting'

/** A verified NAR file as an upload measured it. */
export interface NarFileFacts {
  fileHash: string
  fileSize: number
  compression: string
  narHash: string
  narSize: number
}

export interface NarFileRow extends NarFileFacts {
  id: number
  state: NarFileState
}

/** A narinfo to insert, rendered and checked by the cache layer (cache/accept-narinfo.ts). */
export interface NarinfoRecord {
  hashPart: string
  storePath: string
  narFileId: number
  narHash: string
  narSize: number
  deriver: string | null
  ca: string | null
  sigs: string[]
  /** The text GET serves. */
  narinfo: string
  /** Every reference, the path itself included when it references itself. */
  references: Array<{ hashPart: string, baseName: string }>
}

export interface StoredNarinfo {
  id: number
  hashPart: string
  storePath: string
  narFileId: number
  narHash: string
  narSize: number
  sigs: string[]
  narinfo: string
  /** Reference base names, sorted. */
  references: string[]
}

export interface AuxFile { contentType: string, contentEncoding: string | null, body: Buffer }
export type AuxKind = AuxFileKind
/** An aux file without its body: what a listing needs. */
export interface AuxFileEntry { id: number, kind: AuxKind, name: string, contentType: string, contentEncoding: string | null, size: number }

export type TokenScope = 'read' | 'push' | 'admin'
export interface TokenRow {
  id: number
  name: string
  scope: TokenScope
  createdAt: number
  expiresAt: number | null
  revokedAt: number | null
}

/** Who and where a narinfo write came from, recorded with it (cache/provenance.ts). */
export interface ProvenanceEntry {
  acceptedAt: number
  tokenId: number | null
  tokenName: string | null
  /** Names of the trusted keys whose signatures verified, sorted. */
  keyNames: string[]
  clientAddress: string | null
  upstream: string | null
}

export interface ProvenanceRow extends ProvenanceEntry {
  outcome: 'created' | 'merged'
}

export interface AuditRecord {
  at: number
  tokenId: number | null
  tokenName: string | null
  clientAddress: string | null
  method: string
  subject: string
  hashPart: string | null
  fileHash: string | null
  outcome: string
  status: number
  code: string | null
  reason: string | null
}

export interface AuditRow extends AuditRecord { id: number }

export interface AuditFilter {
  /** Entries at or after it. */
  since?: number
  /** Entries about this store path: its narinfo writes, and writes of the NAR file it names. */
  hashPart?: string
  fileHash?: string
  tokenId?: number
  limit?: number
}

/** One narinfo as a collection plans with it. */
export interface GcPathRow {
  id: number
  hashPart: string
  narFileId: number
  /** The later of the narinfo's and its NAR file's last read (or the upload). */
  lastUse: number
  /** 1 when a pin that has not expired names this path. */
  pinned: number
  /**
   * The upstream it was pulled from, when that upstream's verified narinfo (upstream_narinfos, not
   * refused) names the same NAR file, so it can be fetched again; else null.
   */
  upstream: string | null
}

/** `referrer` lists `reference` among its References (self-references left out). */
export interface GcEdgeRow { referrer: number, reference: number }

/** Every narinfo, reference and live NAR file size, read at one moment so they agree. */
export interface GcSnapshot {
  paths: GcPathRow[]
  edges: GcEdgeRow[]
  narFiles: Array<{ id: number, fileSize: number }>
}

export interface PinRow {
  hashPart: string
  storePath: string
  keepUntil: number | null
  createdAt: number
  note: string | null
}

export interface GcRunRow {
  startedAt: number
  finishedAt: number
  trigger: 'cli' | 'schedule'
  storePaths: number
  narFiles: number
  bytes: number
  remainingBytes: number
}

export interface PathHit { hashPart: string, storePath: string, narSize: number }
export interface PinState { keepUntil: number | null, note: string | null }
export interface PathSummary {
  hashPart: string
  storePath: string
  narinfo: string
  narSize: number
  createdAt: number
  fileHash: string
  fileSize: number
  compression: string
}

export interface UpstreamRecord {
  hashPart: string
  storePath: string
  /** The upstream's URL, as configured. */
  upstream: string
  /** The NAR's URL on that upstream, as its narinfo said (relative to the upstream's URL). */
  narUrl: string
  fileHash: string
  fileSize: number
  compression: string
  narHash: string
  narSize: number
  /** Reference base names. */
  references: string[]
  /** The narinfo as narwhal serves it. */
  narinfo: string
  createdAt: number
  /** Set when its NAR did not match: the narinfo is no longer served. */
  refusedAt: number | null
}

// ---------------------------------------------------------------------------------------------
// Outcomes of conditional operations

/**
 * claimNarFile: 'pending' — the row is this upload's to commit (inserted now, or another upload
 * of the same bytes is committing it too: committing identical bytes twice is harmless);
 * 'live' — already live, its grace period restarted (commit the blob anyway when the caller
 * found the blob missing or short, then markNarFileLive is a no-op); 'deleting' — gc or fsck is
 * removing it: wait a little and claim again.
 */
export type ClaimOutcome =
  | { kind: 'pending', row: NarFileRow }
  | { kind: 'live', row: NarFileRow }
  | { kind: 'deleting' }

export type InsertNarinfoOutcome =
  | { kind: 'created' }
  /** A narinfo for this hash part is already stored (the cache layer merges or refuses). */
  | { kind: 'exists', existing: StoredNarinfo }
  /** Its NAR file row is not 'live' (never uploaded, still pending, or being deleted). */
  | { kind: 'nar-file-not-live' }
  /** References (base names) held neither by a narinfo here nor, when allowed, by an upstream record. */
  | { kind: 'missing-references', baseNames: string[] }

export type MergeSignaturesOutcome = { kind: 'merged' } | { kind: 'changed-meanwhile' }

/** The narinfos a removal takes along, with what a guard needs to know of each (gc). */
export interface ClosureRow { id: number, hashPart: string, lastUse: number, pinned: number }

export interface RemoveRequest {
  /** Narinfos to remove; every narinfo referencing one of them (transitively) goes too. */
  hashParts: string[]
  /** NAR files to remove (fsck: damaged): every narinfo naming one goes too, with its referrers. */
  narFileIds?: number[]
  /**
   * gc's guard, asked inside the removal's own transaction for each of `hashParts` with the
   * narinfos removing it would take (itself included), as they are at that moment. False keeps
   * that hash part (and what only it would have taken). Pure and synchronous: it decides on the
   * rows given and must not call the store.
   */
  stillWanted?: (hashPart: string, closure: ClosureRow[]) => boolean
  /** Time pins are judged at. */
  now?: number
}

export interface RemoveOutcome {
  /** Store paths whose narinfos were removed. */
  storePaths: string[]
  /** Hash parts of `hashParts` that stillWanted kept. */
  kept: string[]
  /**
   * NAR files no narinfo names any more: now in state 'deleting'. The caller deletes their blobs,
   * then forget them. (In a dry run: those that would be, nothing changed.)
   */
  narFiles: NarFileRow[]
}

// ---------------------------------------------------------------------------------------------
// Facets

export interface NarFileStore {
  /** The row in whatever state, or undefined. */
  get: (fileHash: string) => Promise<NarFileRow | undefined>
  getById: (id: number) => Promise<NarFileRow | undefined>
  /**
   * The live row when it can be said without waiting (SQLite: always), null when known absent or
   * not live, undefined when only an asynchronous read (get) can tell. For the fast read path.
   */
  peekLive: (fileHash: string) => NarFileRow | null | undefined
  /**
   * Step 1 of storing a verified NAR file (see ClaimOutcome). Restarts the grace period
   * (created_at = max(created_at, now)) of a pending or live row. Need not wait for the disk: the
   * commit of the narinfo that names it takes it along.
   */
  claim: (facts: NarFileFacts, now: number) => Promise<ClaimOutcome>
  /**
   * Step 3, after the blob is committed: pending → live. True when the row is live now (also
   * when it already was); false when it is gone or 'deleting'. Need not wait for the disk.
   */
  markLive: (id: number) => Promise<boolean>
  /** Restarts the grace period of a live row, as re-uploading it does: the row, or undefined when not live. */
  renew: (fileHash: string, now: number) => Promise<NarFileRow | undefined>
  /**
   * gc's first step: marks 'deleting' every live file no narinfo names that was created before
   * `createdBefore`, and every 'pending' file created before `pendingBefore` (a crashed upload);
   * returns those together with rows left 'deleting' by an earlier, interrupted removal. The
   * caller deletes their blobs, then forgets them. With dryRun nothing changes and the rows that
   * would be returned are.
   */
  markUnnamedDeleting: (createdBefore: number, pendingBefore: number, options?: { dryRun?: boolean }) => Promise<NarFileRow[]>
  /** Deletes the row, only in state 'deleting' and named by no narinfo; true when it did. */
  forget: (id: number) => Promise<boolean>
  /** Up to `limit` rows (any state) with ids above `afterId`, in id order. */
  page: (afterId: number, limit: number) => Promise<NarFileRow[]>
  /** Count and summed size of all rows. */
  totals: () => Promise<{ files: number, bytes: number }>
}

export interface NarinfoStore {
  /**
   * The narinfo's UTF-8 text as GET serves it, or undefined; from memory when unchanged since
   * last asked (any write here, or another process's commit, invalidates).
   */
  body: (hashPart: string) => Promise<Buffer | undefined>
  /** The same without waiting: null when known absent, undefined when only `body` can tell. */
  peekBody: (hashPart: string) => Buffer | null | undefined
  get: (hashPart: string) => Promise<StoredNarinfo | undefined>
  text: (hashPart: string) => Promise<string | undefined>
  has: (hashPart: string) => Promise<boolean>
  storePathOf: (hashPart: string) => Promise<string | undefined>
  count: () => Promise<number>
  /**
   * Inserts the narinfo with its references and its provenance ('created'), atomically, only when
   * no narinfo has its hash part, its NAR file is live, and every reference other than itself is
   * the exact store path of a narinfo here or (with `upstreamReferences`) of a served upstream
   * record.
   */
  insert: (record: NarinfoRecord, provenance: ProvenanceEntry, options: InsertNarinfoOptions) => Promise<InsertNarinfoOutcome>
  /**
   * Compare-and-swap of a stored narinfo's signatures: sets `sigs` and `narinfo` and records the
   * provenance ('merged') only when its signatures are still exactly `expectedSigs`.
   */
  mergeSignatures: (id: number, expectedSigs: string[], sigs: string[], narinfo: string, provenance: ProvenanceEntry) => Promise<MergeSignaturesOutcome>
  /**
   * Removes narinfos with their referrers, and marks the NAR files left unnamed 'deleting', in one
   * transaction (see RemoveRequest). With dryRun, reports what it would remove and changes nothing.
   */
  remove: (request: RemoveRequest, options?: { dryRun?: boolean }) => Promise<RemoveOutcome>
  /** Up to `limit` narinfos with ids above `afterId`, in id order, with their references. */
  page: (afterId: number, limit: number) => Promise<Array<Omit<StoredNarinfo, 'sigs'>>>
  /** Narinfos whose NAR file row is gone or not live (a hand edit, or a removal in progress). */
  withoutLiveNarFile: () => Promise<Array<{ hashPart: string, storePath: string, narFileId: number }>>
  /** Each reference, other than to a path the cache holds, with the narinfo that names it. */
  missingReferences: () => Promise<Array<{ hashPart: string, storePath: string, refBaseName: string }>>
  /** The narinfos naming any of these NAR files. */
  naming: (narFileIds: number[]) => Promise<Array<{ hashPart: string, storePath: string }>>
}

export interface AuxFileStore {
  get: (kind: AuxKind, name: string) => Promise<AuxFile | undefined>
  /** Inserts or replaces. */
  put: (kind: AuxKind, name: string, file: AuxFile, now: number) => Promise<void>
  /** Up to `limit` entries (without bodies) with ids above `afterId`, in id order. */
  page: (afterId: number, limit: number) => Promise<AuxFileEntry[]>
}

export interface TokenStore {
  /** Returns the new token's id. */
  insert: (token: { name: string, scope: TokenScope, tokenHash: string, expiresAt: number | null }, now: number) => Promise<number>
  byHash: (tokenHash: string) => Promise<TokenRow | undefined>
  list: () => Promise<TokenRow[]>
  /** False when no unrevoked token has that id. */
  revoke: (id: number, now: number) => Promise<boolean>
}

export interface RetentionStore {
  /**
   * When the narinfo of `hashPart` and the NAR file it names were last used (read, or uploaded),
   * or undefined when there is no such narinfo: what a collection's lastUse is made of.
   */
  lastUse: (hashPart: string) => Promise<{ narinfo: number, narFile: number } | undefined>
  /**
   * Sets the last-use time of these narinfos and NAR files to `at`, earlier or later (touch only
   * moves it forward): for a path whose history is known otherwise, and for tests that age a path.
   */
  setLastUse: (narinfoHashParts: Iterable<string>, narFileHashes: Iterable<string>, at: number) => Promise<void>
  /**
   * Records reads (narinfos by hash part, NAR files by file hash) as at `now`, skipping rows whose
   * recorded read is less than a minute old. Times never move back. Need not wait for the disk.
   */
  touch: (narinfoHashParts: Iterable<string>, narFileHashes: Iterable<string>, now: number) => Promise<void>
  snapshot: (now: number) => Promise<GcSnapshot>
  /** Store paths of narinfo ids (those that exist). */
  storePathsOf: (ids: number[]) => Promise<Map<number, string>>
  /** The size of every live NAR file, named or not. */
  totalNarBytes: () => Promise<number>
  /** Adds a pin, or replaces the expiry and note of an existing one. */
  addPin: (pin: { hashPart: string, storePath: string, keepUntil: number | null, note: string | null }, now: number) => Promise<void>
  /** False when no pin names that path. */
  removePin: (hashPart: string) => Promise<boolean>
  listPins: () => Promise<PinRow[]>
  /** Deletes pins whose keep-until has passed; returns how many. */
  deleteExpiredPins: (now: number) => Promise<number>
  recordGcRun: (run: GcRunRow) => Promise<void>
  lastGcRun: () => Promise<GcRunRow | undefined>
  gcTotals: () => Promise<{ runs: number, storePaths: number, narFiles: number, bytes: number }>
}

export interface ProvenanceStore {
  /** Every recorded write of a path, oldest first; empty when the path is not in the cache. */
  ofPath: (hashPart: string) => Promise<ProvenanceRow[]>
  /** Paths created (not merged) at or after `since` that are still in the cache. */
  createdSince: (since: number) => Promise<number>
}

export interface AuditStore {
  /** Appends entries and trims the log to its newest `keep`; need not wait for the disk. */
  append: (records: AuditRecord[], keep: number) => Promise<void>
  /** The newest `limit` matching entries, oldest first. */
  query: (filter: AuditFilter) => Promise<AuditRow[]>
}

/** Read-only queries of the pages for people (cache/browse.ts). */
export interface BrowseStore {
  totals: () => Promise<{ paths: number, narFiles: number, narBytes: number }>
  /** Distinct NAR files read at or after `since` (one-minute resolution), excluding never-read ones. */
  narFilesFetchedSince: (since: number) => Promise<number>
  /** Paths whose hash part starts with `prefix` (nix32 characters only; the caller checks). */
  byHashPrefix: (prefix: string, limit: number) => Promise<PathHit[]>
  /** Paths whose name (after `<hash>-`) contains `text`, case-insensitively for ASCII. */
  byName: (text: string, limit: number) => Promise<PathHit[]>
  summary: (hashPart: string) => Promise<PathSummary | undefined>
  /** Paths that list `hashPart` among their references (itself left out), by store path. */
  referrers: (hashPart: string, limit: number) => Promise<Array<{ hashPart: string, storePath: string }>>
  /** The references of a path, and whether each is in the cache. */
  references: (hashPart: string) => Promise<Array<{ baseName: string, present: boolean }>>
  pin: (hashPart: string) => Promise<PinState | undefined>
}

export interface InsertNarinfoOptions {
  upstreamReferences: boolean
  now: number
  /**
   * The commit need not wait for the disk: it may be lost to a power cut, but only with every
   * later write (a path pulled from an upstream, which is pulled again when asked for; a batch
   * part, whose request calls flush before it is answered). A store may wait anyway.
   */
  durableWithNext?: boolean
}

/** Narinfos pulled from upstream caches (upstream/pull-through.ts). */
export interface UpstreamRecordStore {
  get: (hashPart: string) => Promise<UpstreamRecord | undefined>
  /** The same without waiting: null when known absent, undefined when only `get` can tell. */
  peek: (hashPart: string) => UpstreamRecord | null | undefined
  /** The still-served records that name this NAR file. */
  namingFile: (fileHash: string) => Promise<UpstreamRecord[]>
  /** Whether a still-served record holds exactly this store path. */
  holds: (hashPart: string, storePath: string) => Promise<boolean>
  /** Stores a verified record; the first one stored for a path stays. Need not wait for the disk. */
  insert: (record: Omit<UpstreamRecord, 'refusedAt'>) => Promise<void>
  /** Stops serving every record naming this NAR file; returns how many. */
  refuseFile: (fileHash: string, now: number) => Promise<number>
}

export interface MetadataStore {
  readonly narFiles: NarFileStore
  readonly narinfos: NarinfoStore
  readonly aux: AuxFileStore
  readonly tokens: TokenStore
  readonly retention: RetentionStore
  readonly provenance: ProvenanceStore
  readonly audit: AuditStore
  readonly browse: BrowseStore
  readonly upstreamRecords: UpstreamRecordStore
  /**
   * A number that changes whenever what GET serves may have changed (this process's writes at
   * once, other processes' within the backend's freshness bound): whoever keeps served bytes in
   * memory (small NAR bodies, server/fast-reads.ts) forgets them when it changed. Synchronous.
   */
  servedGeneration: () => number
  /** Every row as stored, for moving the cache to another backend (the embedded SQLite file has it). */
  readonly dump?: MetadataDump
  /** Writing moved rows (PostgreSQL has it). */
  readonly load?: MetadataLoad
  /**
   * Resolves once every commit this store made before the call is on the disk, those made with
   * durableWithNext included: one wait for many commits (the upload-batch route answers once for
   * all its narinfos). A store whose commits always wait for the disk has nothing to do.
   */
  flush: () => Promise<void>
  close: () => Promise<void>
}

// ---------------------------------------------------------------------------------------------
// Moving a cache from one backend to another (cache/move-cache.ts, `narwhal export --database`)
//
// The source dumps its rows in id order, the target loads them. Every load call is one
// transaction and idempotent (natural keys: file hash, hash part, token hash, (kind, name); the
// audit log and gc history, which have none, by the move's high-water marks), so a move killed
// at any point is finished by running it again, duplicating nothing.

export interface DumpedNarFile extends NarFileRow { createdAt: number, lastAccessedAt: number }

/** A narinfo as stored, with what its insert wrote along: references, provenance, times. */
export interface DumpedNarinfo extends Omit<NarinfoRecord, 'narFileId'> {
  id: number
  createdAt: number
  lastAccessedAt: number
  /** Its NAR file's row; undefined when the row is gone (fsck reports that). */
  narFile: DumpedNarFile | undefined
  /** Oldest first. Token ids are the source's. */
  provenance: ProvenanceRow[]
}

export interface DumpedToken extends TokenRow { tokenHash: string }
export interface DumpedAuxFile extends AuxFile { id: number, kind: AuxKind, name: string, createdAt: number }
export interface DumpedGcRun extends GcRunRow { id: number }

export interface MetadataDump {
  /** Up to `limit` narinfos with ids above `afterId`, in id order (an order in which references come first). */
  narinfos: (afterId: number, limit: number) => Promise<DumpedNarinfo[]>
  tokens: () => Promise<DumpedToken[]>
  pins: () => Promise<PinRow[]>
  /** Up to `limit` aux files, bodies included, with ids above `afterId`, in id order. */
  auxFiles: (afterId: number, limit: number) => Promise<DumpedAuxFile[]>
  /** Up to `limit` upstream records with hash parts above `afterHashPart`, in hash part order. */
  upstreamRecords: (afterHashPart: string, limit: number) => Promise<UpstreamRecord[]>
  /** Up to `limit` audit entries with ids above `afterId`, in id order. */
  audit: (afterId: number, limit: number) => Promise<AuditRow[]>
  gcRuns: () => Promise<DumpedGcRun[]>
}

/** A move into this database, as cache_moves records it. */
export interface MoveRecord {
  id: number
  /** The moved cache: `sqlite:<absolute path of its SQLite file>`. */
  source: string
  startedAt: number
  finishedAt: number | null
  /** The highest source audit entry id and gc run id copied. */
  auditThrough: number
  gcRunsThrough: number
}

/** Rows in each table: whether a database is empty, and what a refusal names. */
export interface TableCounts {
  narinfos: number
  narFiles: number
  tokens: number
  pins: number
  auxFiles: number
  upstreamRecords: number
  auditEntries: number
  gcRuns: number
}

export type LoadNarinfoOutcome =
  | { kind: 'created' }
  /** Already here with the same store path and NAR hash (an earlier run of the move). */
  | { kind: 'present' }
  /** Here with another store path or NAR hash: left as it is. */
  | { kind: 'differs', storePath: string, narHash: string }
  /** References held by no narinfo and no served upstream record here. */
  | { kind: 'missing-references', baseNames: string[] }
  /** Its NAR file is here but not live (an upload or a collection of it under way): try again. */
  | { kind: 'nar-file-busy' }

/** How many rows a load call wrote, and how many were there already. */
export interface LoadCounts { created: number, present: number }

export interface MetadataLoad {
  contents: () => Promise<TableCounts>
  moves: () => Promise<MoveRecord[]>
  /** Records the move of `source` (or returns the one recorded). */
  beginMove: (source: string, now: number) => Promise<MoveRecord>
  finishMove: (id: number, now: number) => Promise<void>
  /**
   * Inserts the tokens not here (by token hash), keeping their ids when free; a token here that is
   * revoked in the source is revoked here too. Returns source id -> id here, for every token.
   */
  tokens: (rows: DumpedToken[]) => Promise<{ ids: Map<number, number>, counts: LoadCounts }>
  /** Records not here (by hash part) are inserted as they are. */
  upstreamRecords: (rows: UpstreamRecord[]) => Promise<LoadCounts>
  /**
   * For each narinfo in order, in one transaction: its NAR file row (by file hash, inserted live
   * with its times: the caller has put its blob in place first), then the narinfo with its
   * references, times and provenance (token ids mapped by `tokenIds`; unknown ones become null),
   * only when the same guards as NarinfoStore.insert pass (upstream references allowed).
   */
  narinfos: (rows: Array<DumpedNarinfo & { narFile: DumpedNarFile }>, tokenIds: Map<number, number>) => Promise<LoadNarinfoOutcome[]>
  /** Pins not here (by hash part). */
  pins: (rows: PinRow[]) => Promise<LoadCounts>
  /** Aux files not here (by kind and name). */
  auxFiles: (rows: DumpedAuxFile[]) => Promise<LoadCounts>
  /** Entries with source ids above the move's auditThrough, which becomes the highest id given. */
  audit: (moveId: number, rows: AuditRow[], tokenIds: Map<number, number>) => Promise<LoadCounts>
  /** The same for gc runs (gcRunsThrough). */
  gcRuns: (moveId: number, rows: DumpedGcRun[]) => Promise<LoadCounts>
}
