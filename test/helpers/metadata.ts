/** Rows written straight into a metadata store, for tests that need a cache in a given state without uploads. */
import type { MetadataStore, NarFileFacts, NarFileRow, NarinfoRecord } from '../../src/db/metadata-store.js'

/** A live NAR file row (claimed and made live, as an upload does, without a blob). */
export async function recordNarFile (metadata: MetadataStore, facts: NarFileFacts, now = Date.now()): Promise<NarFileRow> {
  const claim = await metadata.narFiles.claim(facts, now)
  if (claim.kind === 'deleting') throw new Error(`NAR file ${facts.fileHash} is being deleted`)
  if (!await metadata.narFiles.markLive(claim.row.id)) throw new Error(`NAR file ${facts.fileHash} did not go live`)
  return { ...claim.row, state: 'live' }
}

/** A narinfo row, as acceptNarinfo inserts it but without its rules; throws unless created. */
export async function insertNarinfo (metadata: MetadataStore, record: NarinfoRecord, now = Date.now()): Promise<void> {
  const outcome = await metadata.narinfos.insert(record,
    { acceptedAt: now, tokenId: null, tokenName: null, keyNames: [], clientAddress: null, upstream: null },
    { upstreamReferences: false, now })
  if (outcome.kind !== 'created') throw new Error(`narinfo ${record.hashPart}: ${outcome.kind}`)
}
