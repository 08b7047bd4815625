/**
 * The rules for a narinfo an upstream cache served, before narwhal serves it to anyone:
 *   1. it parses exactly as an uploaded narinfo must (nix/narinfo.ts),
 *   2. its StorePath is the path asked for,
 *   3. at least one Sig verifies over the fingerprint under one of that upstream's configured
 *      keys, and none under such a key fails to (a tampered field),
 *   4. it states FileHash (SHA-256) and FileSize, and a compression narwhal can verify: its NAR
 *      will be checked against them byte for byte when fetched (cache/store-pulled-nar.ts).
 * Its signatures are kept as they are (the client checks them against its own trusted keys);
 * only its URL changes, to narwhal's own NAR route.
 */
import { NarwhalError } from '../errors.js'
import { extensionFor, normaliseCompressionField, VERIFIABLE_COMPRESSIONS } from '../nix/compression.js'
import { fingerprintNarInfo } from '../nix/fingerprint.js'
import { formatNarInfo, parseNarInfo, sortedUnique } from '../nix/narinfo.js'
import { encodeNix32 } from '../nix/nix32.js'
import { parseStorePath } from '../nix/store-path.js'
import type { UpstreamRecord } from '../db/metadata-store.js'
import type { TrustedKeys } from '../signing/keys.js'
import { signatureKeyName } from '../nix/signature.js'

/** A verified upstream narinfo: the record it is kept as, less where and when, plus who signed it. */
export type PulledNarinfo = Omit<UpstreamRecord, 'hashPart' | 'upstream' | 'createdAt' | 'refusedAt'> & {
  /** Names of the upstream keys whose signature verified. */
  signedBy: string[]
}

function invalid (message: string): NarwhalError {
  return new NarwhalError('NARWHAL_NARINFO_INVALID', `upstream narinfo: ${message}`)
}

export function checkPulledNarinfo (text: string, hashPart: string, upstreamKeys: TrustedKeys): PulledNarinfo {
  const info = parseNarInfo(text)
  const { hashPart: actual } = parseStorePath(info.storePath, 'StorePath', 'NARWHAL_NARINFO_INVALID')
  if (actual !== hashPart) throw invalid(`StorePath ${info.storePath} is not the path ${hashPart} asked for`)
  const { verifiedBy, forgedUnderTrustedName } = upstreamKeys.check(fingerprintNarInfo(info), info.sigs)
  if (forgedUnderTrustedName.length > 0) {
    throw new NarwhalError('NARWHAL_SIGNATURE_REJECTED', `upstream narinfo field Sig: the signature by ${forgedUnderTrustedName.map(s => signatureKeyName(s) ?? '?').join(', ')} ` +
      'does not verify over this narinfo')
  }
  if (verifiedBy.length === 0) {
    throw new NarwhalError('NARWHAL_SIGNATURE_REJECTED', `upstream narinfo field Sig: no signature by this upstream's keys (${upstreamKeys.names().join(', ')})`)
  }
  if (info.fileHash === undefined || info.fileSize === undefined) {
    throw invalid('FileHash and FileSize are missing; narwhal verifies every NAR it passes on against them')
  }
  const compression = normaliseCompressionField(info.compression)
  if (!(VERIFIABLE_COMPRESSIONS as readonly string[]).includes(compression)) {
    throw new NarwhalError('NARWHAL_UNSUPPORTED_COMPRESSION', `upstream narinfo field Compression: ${compression} is not one narwhal can verify`)
  }
  if (info.fileSize > BigInt(Number.MAX_SAFE_INTEGER) || info.narSize > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw invalid('FileSize or NarSize is beyond 2^53 bytes')
  }
  const fileHash = encodeNix32(info.fileHash)
  const sigs = sortedUnique(info.sigs)
  return {
    storePath: info.storePath,
    narUrl: info.url,
    fileHash,
    fileSize: Number(info.fileSize),
    compression,
    narHash: encodeNix32(info.narHash),
    narSize: Number(info.narSize),
    references: info.references,
    narinfo: formatNarInfo({ ...info, compression, url: `nar/${fileHash}.nar${extensionFor(compression)}`, sigs }),
    signedBy: verifiedBy
  }
}
