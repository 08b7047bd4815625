/**
 * The write rules for a narinfo: what must be true before the cache will serve a store path.
 * Independent of HTTP; the route only hands over the text and the hash part from the URL.
 *
 * A narinfo is accepted only when
 *   1. it parses exactly as Nix parses it (and without the ambiguities Nix tolerates),
 *   2. its StorePath is the path the URL names,
 *   3. its URL names a NAR file this cache received and verified, and every size, hash and the
 *      compression it states agree with what the cache measured,
 *   4. at least one Sig verifies against a trusted uploader key over the fingerprint
 *      `1;<path>;<sha256:nix32 NarHash>;<NarSize>;<sorted full refs>`, and no Sig under a trusted
 *      key name fails to verify (that is a forgery or a tampered field),
 *   5. every reference other than the path itself already has a narinfo here, or (with upstream
 *      caches configured) a verified narinfo pulled from an upstream (cache/pull-through.ts): the
 *      closure is then complete through narwhal.
 * A second upload for the same path with the same content merges new signatures; one with
 * different content is refused and the first stays. A write that changes the cache records its
 * provenance (cache/provenance.ts) with it.
 *
 * The metadata store guards what must hold at the moment of the write (no narinfo for the path
 * yet, the NAR file live, the references present; the signatures unchanged since read for a
 * merge) and answers with an outcome; a narinfo that lost a race is decided again from the top.
 */
import { NarwhalError } from '../errors.js'
import { extensionFor, normaliseCompressionField } from '../nix/compression.js'
import { fingerprintNarInfo } from '../nix/fingerprint.js'
import { formatNixHash, parseNixHash } from '../nix/hash.js'
import { parseNarInfo, formatNarInfo, type NarInfo } from '../nix/narinfo.js'
import { decodeNix32, encodeNix32 } from '../nix/nix32.js'
import { parseNarUrl } from '../nix/nar-url.js'
import { STORE_DIR, parseStorePathBaseName } from '../nix/store-path.js'
import type { TrustedKeys } from '../signing/keys.js'
import { signatureKeyName } from '../nix/signature.js'
import type { MetadataStore, NarFileRow, ProvenanceEntry, StoredNarinfo } from '../db/metadata-store.js'
import type { BlobStore } from '../storage/blob-store.js'
import type { Provenance, WriteOrigin } from './provenance.js'

export type AcceptResult = 'created' | 'merged' | 'unchanged'

function invalid (message: string): NarwhalError {
  return new NarwhalError('NARWHAL_NARINFO_INVALID', message)
}

/** Rule 3: the narinfo describes the NAR file the cache holds, field by field. */
async function checkAgainstNarFile (info: NarInfo, metadata: MetadataStore): Promise<NarFileRow> {
  const match = parseNarUrl(info.url)
  if (match === undefined) {
    throw invalid(`narinfo field URL: ${JSON.stringify(info.url)} is not nar/<52-char nix32 file hash>.nar[.ext]; ` +
      'narwhal only serves NARs uploaded to it')
  }
  const { fileHash, extension } = match
  const nar = await metadata.narFiles.get(fileHash)
  if (nar?.state !== 'live') throw narNotUploaded(info)
  const compression = normaliseCompressionField(info.compression)
  if (compression !== nar.compression) {
    throw invalid(`narinfo field Compression: says ${compression} but the NAR file is ${nar.compression}`)
  }
  if (extension !== extensionFor(compression)) {
    throw invalid(`narinfo field URL: extension "${extension}" does not match Compression ${compression} ` +
      `(Nix names it "${extensionFor(compression)}")`)
  }
  if (info.fileHash !== undefined && encodeNix32(info.fileHash) !== nar.fileHash) {
    throw invalid(`narinfo field FileHash: ${formatNixHash(info.fileHash)} is not the hash of ${info.url}`)
  }
  if (info.fileSize !== undefined && info.fileSize !== BigInt(nar.fileSize)) {
    throw invalid(`narinfo field FileSize: ${info.fileSize} but ${info.url} has ${nar.fileSize} bytes`)
  }
  if (encodeNix32(info.narHash) !== nar.narHash) {
    throw invalid(`narinfo field NarHash: ${formatNixHash(info.narHash)} but ${info.url} decompresses to a NAR ` +
      `with sha256:${nar.narHash}`)
  }
  if (info.narSize !== BigInt(nar.narSize)) {
    throw invalid(`narinfo field NarSize: ${info.narSize} but ${info.url} decompresses to ${nar.narSize} bytes`)
  }
  return nar
}

/** Rule 4. Returns the names of the trusted keys that signed. */
function checkSignatures (info: NarInfo, trusted: TrustedKeys): string[] {
  if (trusted.size === 0) {
    throw new NarwhalError('NARWHAL_NO_TRUSTED_KEY', 'this cache trusts no uploader key, so it accepts no narinfo; ' +
      'start it with --trusted-key NAME:BASE64 (or NARWHAL_TRUSTED_KEYS, or trustedKeys in the config file)')
  }
  const { verifiedBy, forgedUnderTrustedName } = trusted.check(fingerprintNarInfo(info), info.sigs)
  if (forgedUnderTrustedName.length > 0) {
    throw new NarwhalError('NARWHAL_SIGNATURE_REJECTED', `narinfo field Sig: the signature by ${forgedUnderTrustedName.map(sig => signatureKeyName(sig) ?? 'an unnamed key').join(', ')} ` +
      'does not verify over this narinfo (StorePath, NarHash, NarSize and References are signed; one was changed)')
  }
  if (verifiedBy.length === 0) {
    throw new NarwhalError('NARWHAL_SIGNATURE_REJECTED', 'narinfo field Sig: no signature by a trusted uploader key ' +
      `(this cache trusts: ${trusted.names().join(', ')}); sign it, e.g. nix copy --to 'URL?secret-key=FILE'`)
  }
  return verifiedBy
}

function narNotUploaded (info: NarInfo): NarwhalError {
  return new NarwhalError('NARWHAL_MISSING_DEPENDENCY',
    `narinfo field URL: NAR file ${info.url} has not been uploaded to this cache; upload the NAR before its narinfo`)
}

/** Rule 5, its form: each reference is a store path base name. Whether each is held, the store checks. */
function parseReferences (info: NarInfo): Array<{ hashPart: string, baseName: string }> {
  return info.references.map(baseName => ({ hashPart: parseStorePathBaseName(baseName, 'References').hashPart, baseName }))
}

function missingReference (baseName: string): NarwhalError {
  return new NarwhalError('NARWHAL_MISSING_DEPENDENCY', `narinfo field References: ${baseName} is not in this cache; ` +
    'upload the references of a path before the path itself')
}

function sameContent (a: { storePath: string, narHash: string, narSize: number, references: string[] }, info: NarInfo): boolean {
  return a.storePath === info.storePath && a.narHash === encodeNix32(info.narHash) && BigInt(a.narSize) === info.narSize &&
    [...a.references].sort().join(' ') === [...info.references].sort().join(' ')
}

/**
 * Where a write came from, and where to record it. `flushedByCaller`: the caller waits for
 * metadata.flush() before it answers (the upload-batch route, once for all its parts), so the
 * narinfo's own commit need not wait for the disk.
 */
export interface Witness { provenance: Provenance, origin: WriteOrigin, flushedByCaller?: boolean }

/** How many times a narinfo that lost a race to another write is decided again. */
const ATTEMPTS = 5

/**
 * `upstreamReferences`: references held by a verified narinfo pulled from an upstream count as
 * present (rule 5; upstream caches configured).
 */
export async function acceptNarinfo (text: string, urlHashPart: string, metadata: MetadataStore, trusted: TrustedKeys, witness: Witness,
  upstreamReferences = false, bucket?: Pick<BlobStore, 'publishNarinfo'>): Promise<AcceptResult> {
  const decided = await decide(text, urlHashPart, metadata, trusted, witness, upstreamReferences)
  // Into a bucket read as a Nix cache (a no-op for the folder): after the row, whose NAR is live,
  // so the bucket never names a NAR it lacks. Also when unchanged: a retry after a publish that
  // failed (object store down) writes it then.
  await bucket?.publishNarinfo(urlHashPart, decided.narinfo)
  return decided.result
}

/** The rules above, and the store's conditional writes; the stored narinfo text with the outcome. */
async function decide (text: string, urlHashPart: string, metadata: MetadataStore, trusted: TrustedKeys, witness: Witness,
  upstreamReferences: boolean): Promise<{ result: AcceptResult, narinfo: string }> {
  const info = parseNarInfo(text)
  const baseName = info.storePath.slice(STORE_DIR.length + 1)
  const { hashPart } = parseStorePathBaseName(baseName, 'StorePath')
  if (hashPart !== urlHashPart) {
    throw invalid(`narinfo field StorePath: ${info.storePath} does not belong at ${urlHashPart}.narinfo`)
  }
  const verifiedBy = checkSignatures(info, trusted)
  const provenance = witness.provenance.entry(witness.origin, verifiedBy)

  for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
    const existing = await metadata.narinfos.get(hashPart)
    if (existing !== undefined) {
      const merged = await mergeInto(existing, info, metadata, provenance)
      if (merged !== undefined) return merged
      continue
    }
    const nar = await checkAgainstNarFile(info, metadata)
    const references = parseReferences(info)
    const stored: NarInfo = {
      ...info,
      compression: nar.compression,
      fileHash: decodeNix32(nar.fileHash),
      fileSize: BigInt(nar.fileSize),
      narHash: parseNixHash(`sha256:${nar.narHash}`, 'NarHash'),
      sigs: [...new Set(info.sigs)].sort()
    }
    const narinfo = formatNarInfo(stored)
    const outcome = await metadata.narinfos.insert({
      hashPart,
      storePath: info.storePath,
      narFileId: nar.id,
      narHash: nar.narHash,
      narSize: nar.narSize,
      deriver: info.deriver ?? null,
      ca: info.ca ?? null,
      sigs: stored.sigs,
      narinfo,
      references
    }, provenance, {
      upstreamReferences,
      now: Date.now(),
      // Pulled from an upstream: lost to a power cut, it is pulled again when asked for, so its
      // commit does not hold the event loop up for an fsync. A batch part: its request flushes.
      durableWithNext: (witness.origin.upstream !== undefined && witness.origin.upstream !== null) || witness.flushedByCaller === true
    })
    switch (outcome.kind) {
      case 'created': return { result: 'created', narinfo }
      case 'exists': continue
      case 'nar-file-not-live': throw narNotUploaded(info)
      case 'missing-references': throw missingReference(outcome.baseNames[0] ?? '')
    }
  }
  throw new NarwhalError('NARWHAL_BUSY', `${info.storePath} is being written by other uploads at the same moment; retry`)
}

/** Merges new signatures into the stored narinfo; undefined when it changed meanwhile (decide again). */
async function mergeInto (existing: StoredNarinfo, info: NarInfo, metadata: MetadataStore,
  provenance: ProvenanceEntry): Promise<{ result: AcceptResult, narinfo: string } | undefined> {
  if (!sameContent(existing, info)) {
    throw new NarwhalError('NARWHAL_CONFLICT', `${info.storePath} is already in this cache with NarHash ` +
      `sha256:${existing.narHash}; a narinfo with different content for the same path is refused`)
  }
  const merged = [...new Set([...existing.sigs, ...info.sigs])].sort()
  if (merged.length === existing.sigs.length) return { result: 'unchanged', narinfo: existing.narinfo }
  const current = parseNarInfo(existing.narinfo)
  const narinfo = formatNarInfo({ ...current, sigs: merged })
  const outcome = await metadata.narinfos.mergeSignatures(existing.id, existing.sigs, merged, narinfo, provenance)
  return outcome.kind === 'merged' ? { result: 'merged', narinfo } : undefined
}
