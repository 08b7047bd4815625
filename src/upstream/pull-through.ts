/**
 * Pull-through from upstream caches: what `narwhal serve --upstream URL` adds to a cache
 * (cache/pull-through.ts is the interface the server knows).
 *
 * A narinfo the cache does not hold is asked of the upstreams in order. The first that has one
 * signed by one of its configured keys wins (cache/pulled-narinfo.ts); it is stored (db/
 * upstream-records.ts) and served with its URL pointing at narwhal. Its NAR is fetched only when
 * a client asks for it, once however many ask at a time (nar-fetch.ts), verified like an upload
 * and stored with its narinfo as an ordinary path (cache/store-pulled-nar.ts). A NAR that does
 * not verify leaves nothing, and its narinfo is no longer served.
 *
 * With `serve --workers N`, and replicas on one PostgreSQL, the processes take turns
 * (fetch-claims.ts): one fetches a NAR, the others' clients wait for it to be stored and are
 * served from the store.
 */
import type { Registry } from 'prom-client'
import type { Config } from '../config/config.js'
import type { MetadataStore, UpstreamRecord, UpstreamRecordStore } from '../db/metadata-store.js'
import { isNarwhalError } from '../errors.js'
import { parseNarInfo } from '../nix/narinfo.js'
import { STORE_DIR, parseStorePathBaseName } from '../nix/store-path.js'
import type { BlobStore } from '../storage/blob-store.js'
import { checkPulledNarinfo } from '../cache/pulled-narinfo.js'
import type { UpstreamStatus } from '../cache/browse.js'
import type { Provenance } from '../cache/provenance.js'
import type { PulledNar, PullLog, PullThrough } from '../cache/pull-through.js'
import { storePulledNar } from '../cache/store-pulled-nar.js'
import { UpstreamMetrics, type RefusalReason } from './metrics.js'
import { NarFetch } from './nar-fetch.js'
import { SOLE_PROCESS, type FetchClaims, type FetchSettled, type FetchTurn } from './fetch-claims.js'
import { Upstream, describe, upstreamFailed } from './upstream.js'

/** Hash parts remembered as prefetched before the memory is cleared. */
const MAX_PREFETCHED = 100_000

/** Codes of a NAR whose bytes are wrong (as opposed to one that could not be fetched). */
const BAD_BYTES = new Set(['NARWHAL_NAR_INVALID', 'NARWHAL_NAR_MALFORMED', 'NARWHAL_TOO_LARGE', 'NARWHAL_UNSUPPORTED_COMPRESSION'])

export interface PullCache {
  config: Readonly<Config>
  metadata: MetadataStore
  blobs: BlobStore
  provenance: Provenance
  /** For what happens outside any request (narinfos asked ahead of the client). */
  log: PullLog
  /** Which process fetches a NAR, when several serve this cache; SOLE_PROCESS by default. */
  claims?: FetchClaims
}

export class UpstreamPullThrough implements PullThrough {
  readonly #upstreams: Upstream[]
  readonly #cache: PullCache
  readonly #records: UpstreamRecordStore
  readonly #metrics = new UpstreamMetrics()
  readonly #asking = new Map<string, Promise<UpstreamRecord | undefined>>()
  readonly #fetching = new Map<string, NarFetch>()
  /** This process's claims of turns to fetch (one per NAR at a time, however many ask). */
  readonly #claiming = new Map<string, Promise<FetchTurn>>()
  /** Hash parts whose references were asked for ahead of the client (#prefetchReferences). */
  readonly #prefetched = new Set<string>()
  /** The log of background asks that no request started: warnings and errors only. */
  readonly #quiet: PullLog

  constructor (cache: PullCache) {
    this.#cache = cache
    this.#records = cache.metadata.upstreamRecords
    this.#upstreams = cache.config.upstreams.map((u, i) => new Upstream(u, i))
    this.#quiet = cache.log
  }

  get upstreamUrls (): string[] {
    return this.#upstreams.map(u => u.url)
  }

  pulledNarinfo (hashPart: string): Buffer | undefined {
    const record = this.#records.peek(hashPart)
    if (record === undefined || record === null || record.refusedAt !== null) return undefined
    this.#prefetchReferences(record.references, undefined)
    return Buffer.from(record.narinfo, 'utf8')
  }

  async narinfo (hashPart: string, log: PullLog): Promise<Buffer | undefined> {
    const record = await this.#records.get(hashPart)
    // Refused: its NAR did not verify; it stays unserved (and is not asked for again).
    if (record !== undefined) {
      if (record.refusedAt !== null) return undefined
      this.#prefetchReferences(record.references, log)
      return Buffer.from(record.narinfo, 'utf8')
    }
    const found = await this.#askOnce(hashPart, log)
    if (found !== undefined) this.#prefetchReferences(found.references, log)
    return found === undefined ? undefined : Buffer.from(found.narinfo, 'utf8')
  }

  /**
   * A client that got a narinfo asks for its references next, one level of the closure after the
   * other: asked now, in the background, their narinfos are here when it does, and a closure's
   * depth costs the upstream's round trip once instead of once per level. One level only (the
   * references' own references are asked when the client gets those), and narinfos only: a NAR is
   * fetched when a client asks for it.
   */
  #prefetchReferences (references: string[], log: PullLog | undefined): void {
    for (const baseName of references) {
      const hashPart = baseName.slice(0, 32)
      if (this.#prefetched.has(hashPart)) continue
      if (this.#prefetched.size >= MAX_PREFETCHED) this.#prefetched.clear()
      this.#prefetched.add(hashPart)
      this.#prefetch(hashPart, log ?? this.#quiet).catch(() => {})
    }
  }

  async #prefetch (hashPart: string, log: PullLog): Promise<void> {
    if (await this.#cache.metadata.narinfos.has(hashPart) || await this.#records.get(hashPart) !== undefined) return
    await this.#askOnce(hashPart, log)
  }

  /** Asks the upstreams, once for all who want this hash part meanwhile. */
  async #askOnce (hashPart: string, log: PullLog): Promise<UpstreamRecord | undefined> {
    let asking = this.#asking.get(hashPart)
    if (asking === undefined) {
      asking = this.#ask(hashPart, log).finally(() => this.#asking.delete(hashPart))
      this.#asking.set(hashPart, asking)
    }
    return await asking
  }

  async narFileSize (fileHash: string): Promise<number | undefined> {
    return (await this.#records.namingFile(fileHash))[0]?.fileSize
  }

  async nar (fileHash: string, log: PullLog, options: { stream: boolean }): Promise<PulledNar | undefined> {
    let fetch = this.#fetching.get(fileHash)
    while (fetch === undefined) {
      const records = await this.#records.namingFile(fileHash)
      if (records.length === 0) return undefined
      // Stored meanwhile (by another request that finished a moment ago, or another worker).
      const row = await this.#cache.metadata.narFiles.get(fileHash)
      if (row?.state === 'live' && await this.#cache.blobs.size(row) !== undefined) return { kind: 'stored' }
      // Checked again after each wait: another request may have started the fetch meanwhile.
      fetch = this.#fetching.get(fileHash)
      if (fetch !== undefined) break
      const turn = await this.#turnFor(fileHash)
      fetch = this.#fetching.get(fileHash)
      if (fetch !== undefined) break
      if (turn.kind === 'mine') {
        fetch = this.#startFetch(fileHash, records, log, turn.release)
        break
      }
      if (turn.outcome === 'failed') throw upstreamFailed(new Error(`another worker's fetch of nar/${fileHash} failed (the log says why)`))
      // 'stored': found stored when the loop asks again; 'abandoned': the turn is claimed again.
    }
    await fetch.ready
    if (options.stream && fetch.joinable) {
      const joined = fetch
      return { kind: 'streaming', fileSize: joined.expected.fileSize, sendTo: async response => await joined.sendTo(response) }
    }
    if (await fetch.done) return { kind: 'stored' }
    // Whatever went wrong (the log says what), a client that waited for the fetch gets a 502, or
    // the upstream's 404.
    const error = fetch.error
    throw isNarwhalError(error) && (error.code === 'NARWHAL_NOT_FOUND' || error.code === 'NARWHAL_UPSTREAM_FAILED')
      ? error
      : upstreamFailed(error instanceof Error ? error : new Error(String(error)))
  }

  /** The turn to fetch a NAR, asked once for every request of this process that wants it meanwhile. */
  async #turnFor (fileHash: string): Promise<FetchTurn> {
    let claiming = this.#claiming.get(fileHash)
    if (claiming === undefined) {
      claiming = (this.#cache.claims ?? SOLE_PROCESS).claim(fileHash).finally(() => this.#claiming.delete(fileHash))
      this.#claiming.set(fileHash, claiming)
    }
    return await claiming
  }

  async lookupReferences (narinfoText: string, log: PullLog): Promise<void> {
    let references: string[]
    try {
      references = parseNarInfo(narinfoText).references
    } catch {
      return
    }
    await Promise.all(references.map(async baseName => {
      let hashPart: string
      try {
        hashPart = parseStorePathBaseName(baseName, 'References').hashPart
      } catch {
        return
      }
      if (await this.#cache.metadata.narinfos.storePathOf(hashPart) === `${STORE_DIR}/${baseName}`) return
      await this.narinfo(hashPart, log)
    }))
  }

  status (): UpstreamStatus[] {
    return this.#upstreams.map(u => ({ name: new URL(u.url).host, url: u.url, ...u.state() }))
  }

  registerMetrics (registry: Registry): void {
    this.#metrics.register(registry)
  }

  /** Lets the fetches under way finish storing (their clients may already have every byte), then closes the connections. */
  async close (): Promise<void> {
    await Promise.all([...this.#fetching.values()].map(async f => await f.done))
    await Promise.all(this.#upstreams.map(async u => await u.close()))
    await this.#cache.claims?.close?.()
  }

  /** The upstreams in order; the first verified narinfo is stored and served. */
  async #ask (hashPart: string, log: PullLog): Promise<UpstreamRecord | undefined> {
    const maxBytes = this.#cache.config.limits.narinfoBytes
    for (const upstream of this.#upstreams) {
      const labels = { upstream: upstream.url }
      const answer = await upstream.narinfo(hashPart, maxBytes)
      if (answer.kind === 'missing') {
        if (!answer.remembered) this.#metrics.misses.inc(labels)
        continue
      }
      if (answer.kind === 'skipped') continue
      if (answer.kind === 'failed') {
        this.#metrics.errors.inc(labels)
        log.warn({ upstream: upstream.url, hashPart, reason: describe(answer.error) }, 'upstream did not answer a narinfo request')
        continue
      }
      try {
        const pulled = checkPulledNarinfo(answer.text, hashPart, upstream.keys)
        await this.#records.insert({ hashPart, upstream: upstream.url, createdAt: Date.now(), ...pulled })
        this.#metrics.hits.inc(labels)
        log.info({ upstream: upstream.url, storePath: pulled.storePath, signedBy: pulled.signedBy }, 'narinfo pulled from upstream')
        // The first one stored stays (two processes may have asked at once): serve that one.
        return await this.#records.get(hashPart)
      } catch (err) {
        if (!isNarwhalError(err)) throw err
        const reason: RefusalReason = err.code === 'NARWHAL_SIGNATURE_REJECTED' ? 'narinfo_signature' : 'narinfo_invalid'
        this.#metrics.refusals.inc({ ...labels, reason })
        // Asked again, it would be refused again: not before the negative cache expires.
        upstream.rememberMiss(hashPart)
        log.warn({ upstream: upstream.url, hashPart, reason: err.message }, 'narinfo from upstream refused')
      }
    }
    return undefined
  }

  /** Starts the fetch this process has the turn for; `release` reports its outcome once it is recorded. */
  #startFetch (fileHash: string, records: UpstreamRecord[], log: PullLog, release: (outcome: FetchSettled) => void): NarFetch {
    const first = records[0] as UpstreamRecord
    const upstream = this.#upstreams.find(u => u.url === first.upstream)
    const { config, metadata, blobs, provenance } = this.#cache
    const labels = { upstream: first.upstream }
    const paths = records.flatMap(r => {
      const keys = this.#upstreams.find(u => u.url === r.upstream)?.keys
      return keys === undefined ? [] : [{ hashPart: r.hashPart, upstream: r.upstream, narinfo: r.narinfo, keys }]
    })
    const fetch = new NarFetch(first, async () => {
      if (upstream === undefined) {
        throw upstreamFailed(new Error(`nar/${fileHash} was pulled from ${first.upstream}, which is no longer configured`))
      }
      await blobs.ensureRoom(first.fileSize, config.limits.freeSpaceReserveBytes)
      const response = await upstream.nar(first.narUrl)
      return response.body as unknown as AsyncIterable<Buffer> & { destroy: (err?: Error) => void }
    }, async (body, verified) => await storePulledNar(body, first, paths, { metadata, blobs, provenance }, {
      maxBytes: Math.min(first.fileSize, config.limits.narBytes),
      maxNarSize: Math.min(first.narSize, config.limits.narSizeBytes),
      declaredBytes: first.fileSize,
      reserveBytes: config.limits.freeSpaceReserveBytes
    }, verified), n => this.#metrics.bytes.inc(labels, n))
    this.#fetching.set(fileHash, fetch)
    log.info({ upstream: first.upstream, fileHash, fileSize: first.fileSize }, 'fetching NAR from upstream')
    fetch.done.then(async stored => {
      this.#fetching.delete(fileHash)
      if (stored) {
        upstream?.succeeded()
        this.#metrics.nars.inc(labels)
        log.info({ upstream: first.upstream, fileHash, fileSize: first.fileSize, storePaths: records.map(r => r.storePath) }, 'NAR pulled from upstream, verified and stored')
        return true
      }
      const err = fetch.error
      if (isNarwhalError(err) && BAD_BYTES.has(err.code)) {
        this.#metrics.refusals.inc({ ...labels, reason: 'nar_mismatch' })
        log.error({ upstream: first.upstream, fileHash, storePaths: records.map(r => r.storePath), reason: err.message },
          'NAR from upstream did not verify: nothing stored, its narinfo is no longer served')
        // Recorded before the turn is released: the other workers' clients then find it refused.
        await this.#records.refuseFile(fileHash, Date.now()).catch((refuseErr: unknown) => {
          log.error({ fileHash, err: refuseErr }, 'could not record that an upstream NAR did not verify')
        })
      } else {
        this.#metrics.errors.inc(labels)
        log.warn({ upstream: first.upstream, fileHash, reason: describe(err) }, 'NAR could not be fetched from upstream')
      }
      return false
    }).catch((err: unknown) => {
      log.error({ err, fileHash }, 'could not record the outcome of a NAR fetch')
      return false
    }).then(stored => { release(stored ? 'stored' : 'failed') }, () => { release('failed') })
    return fetch
  }
}
