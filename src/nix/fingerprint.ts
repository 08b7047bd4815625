/**
 * The fingerprint of a store path: the exact bytes a narinfo `Sig` signs (fact sheet §6.2,
 * [2.8] `ValidPathInfo::fingerprint`).
 *
 *   1;/nix/store/xcp9…-hello-2.10;sha256:16mvl7v0…kqci;206104;/nix/store/5635…-glibc-2.33-56,/nix/store/xcp9…-hello-2.10
 *     └ StorePath ─────────────┘ └ NarHash, nix32 ───┘ └NarSize┘└ references: full paths, sorted, comma-joined ─────┘
 *
 * The hash is re-rendered as nix32 whatever spelling the narinfo used, references are sorted
 * byte-wise and de-duplicated (a `std::set`), self-references included. No trailing newline.
 * URL, Compression, FileHash, FileSize, Deriver and CA are not covered.
 */

import { NarwhalError } from '../errors.js'
import { formatNixHash } from './hash.js'
import { sortedUnique, type NarInfo } from './narinfo.js'
import { STORE_DIR } from './store-path.js'

export function fingerprintPath (storePath: string, narHash: Buffer, narSize: bigint, references: readonly string[]): string {
  // Nix throws here too: a zero size means the path info was never filled in.
  if (narSize <= 0n) throw new NarwhalError('NARWHAL_NARINFO_INVALID', 'narinfo field NarSize: cannot fingerprint a path with NarSize 0')
  const refs = sortedUnique(references.map(base => `${STORE_DIR}/${base}`))
  return `1;${storePath};${formatNixHash(narHash)};${narSize};${refs.join(',')}`
}

export function fingerprintNarInfo (info: NarInfo): string {
  return fingerprintPath(info.storePath, info.narHash, info.narSize, info.references)
}
