/**
 * What the pages for people show (src/server/routes/pages.ts), gathered without HTTP: the
 * headline figures of the cache, search by hash or name, and everything known about one path.
 * Read-only: nothing here changes the cache.
 */
import type { BrowseStore, MetadataStore, PathHit, PinState } from '../db/metadata-store.js'
import { fingerprintNarInfo } from '../nix/fingerprint.js'
import { parseNarInfo, type NarInfo } from '../nix/narinfo.js'
import { isValidHashPart, STORE_DIR } from '../nix/store-path.js'
import type { TrustedKeys } from '../signing/keys.js'
import { signatureKeyName } from '../nix/signature.js'
import { Provenance, type ProvenanceRow } from './provenance.js'

export type { PathHit, PinState, ProvenanceRow }

/**
 * An upstream cache this one pulls through from, and how it is doing. Filled by the pull-through
 * feature when it is configured (the `upstreams` argument of overview()); empty until then.
 */
export interface UpstreamStatus {
  name: string
  url: string
  /** e.g. "up", "down", "disabled". */
  state: string
  detail?: string
}

export interface Overview {
  paths: number
  narFiles: number
  narBytes: number
  /** Paths created in the last 24 hours that are still here. */
  pushesLastDay: number
  /** Distinct NAR files downloaded in the last 24 hours (one-minute resolution, see db/browse.ts). */
  narFilesFetchedLastDay: number
  upstreams: UpstreamStatus[]
  /** When these figures were read (unix ms); they are kept for FIGURES_MS. */
  at: number
}

export interface SignatureView {
  keyName: string
  /** Verified against a key this cache trusts. */
  trusted: boolean
  text: string
}

export interface PathDetails {
  hashPart: string
  storePath: string
  info: NarInfo
  narSize: number
  fileSize: number
  fileHash: string
  compression: string
  url: string
  createdAt: number
  signatures: SignatureView[]
  references: Array<{ baseName: string, hashPart: string, present: boolean }>
  referrers: Array<{ hashPart: string, storePath: string }>
  /** Capped at MAX_LISTED; true when there were more. */
  referrersTruncated: boolean
  provenance: ProvenanceRow[]
  pin: PinState | undefined
}

/** The figures are counted at most this often (a page reload should not scan the tables each time). */
export const FIGURES_MS = 10_000
/** Search results and referrers listed on one page. */
export const MAX_LISTED = 200
const DAY_MS = 86_400_000
const NIX32_PREFIX = /^[0-9a-df-np-sv-z]{1,32}$/

export class Browse {
  private readonly sql: BrowseStore
  private readonly provenance: Provenance
  private figures: Overview | undefined

  constructor (metadata: MetadataStore) {
    this.sql = metadata.browse
    this.provenance = new Provenance(metadata)
  }

  async overview (upstreams: () => UpstreamStatus[] = () => [], now = Date.now()): Promise<Overview> {
    if (this.figures === undefined || now - this.figures.at >= FIGURES_MS || now < this.figures.at) {
      const totals = await this.sql.totals()
      this.figures = {
        ...totals,
        pushesLastDay: await this.provenance.createdSince(now - DAY_MS),
        narFilesFetchedLastDay: await this.sql.narFilesFetchedSince(now - DAY_MS),
        upstreams: [],
        at: now
      }
    }
    return { ...this.figures, upstreams: upstreams() }
  }

  /**
   * Paths matching `query`: a store path or base name (found by its hash part), a nix32 hash
   * prefix, or else a piece of a name. At most MAX_LISTED.
   */
  async search (query: string): Promise<PathHit[]> {
    let text = query.trim()
    if (text.startsWith(STORE_DIR + '/')) text = text.slice(STORE_DIR.length + 1)
    text = text.split('/')[0] ?? ''
    if (text === '') return []
    const hashPart = text.slice(0, 32)
    if (isValidHashPart(hashPart) && (text.length === 32 || text[32] === '-')) return await this.sql.byHashPrefix(hashPart, 1)
    const byHash = NIX32_PREFIX.test(text) ? await this.sql.byHashPrefix(text, MAX_LISTED) : []
    const byName = await this.sql.byName(text, MAX_LISTED)
    const seen = new Set(byHash.map(h => h.hashPart))
    return [...byHash, ...byName.filter(h => !seen.has(h.hashPart))].slice(0, MAX_LISTED)
  }

  /** Everything about one path; its signatures checked against `trusted`. */
  async path (hashPart: string, trusted: TrustedKeys): Promise<PathDetails | undefined> {
    const row = await this.sql.summary(hashPart)
    if (row === undefined) return undefined
    const info = parseNarInfo(row.narinfo)
    const { verifiedBy } = trusted.check(fingerprintNarInfo(info), info.sigs)
    const referrers = await this.sql.referrers(hashPart, MAX_LISTED + 1)
    return {
      hashPart,
      storePath: row.storePath,
      info,
      narSize: row.narSize,
      fileSize: row.fileSize,
      fileHash: row.fileHash,
      compression: row.compression,
      url: info.url,
      createdAt: row.createdAt,
      signatures: info.sigs.map(text => {
        const keyName = signatureKeyName(text) ?? ''
        return { keyName, trusted: verifiedBy.includes(keyName), text }
      }),
      references: (await this.sql.references(hashPart)).map(r => ({ ...r, hashPart: r.baseName.slice(0, 32) })),
      referrers: referrers.slice(0, MAX_LISTED),
      referrersTruncated: referrers.length > MAX_LISTED,
      provenance: await this.provenance.ofPath(hashPart),
      pin: await this.sql.pin(hashPart)
    }
  }
}
