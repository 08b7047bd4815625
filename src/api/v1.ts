/**
 * narwhal's own HTTP API, version 1: the two routes the pusher uses on top of the Nix binary cache
 * protocol. Shared by the server (src/server/routes/batch.ts) and the pusher (src/pusher/), so the
 * wire types cannot drift apart. Both routes are POST, so both need a token with push scope
 * (src/server/auth.ts: every non-GET/HEAD request does).
 *
 *   POST /api/v1/missing-paths   scope: push
 *     request  application/json  {"hashParts": ["m6w0ra3ns1bjzrazws3m2m2gn9z4rlng", …]}   (≤ 10,000)
 *     response application/json  {"missing":   ["m6w0ra3ns1bjzrazws3m2m2gn9z4rlng", …]}   (same order)
 *     One round trip answers what `nix copy` asks with one narinfo GET per path.
 *
 *   POST /api/v1/upload-batch    scope: push
 *     request  multipart/form-data; each part is a file whose FIELD NAME is the protocol path it
 *              would have been PUT to: `nar/<filehash52>.nar[.ext]` or `<hash32>.narinfo`.
 *              Parts are processed in order, each exactly like the single PUT (NAR bytes verified
 *              while streaming; narinfo through the same write rules), so a batch lists NARs
 *              before the narinfos that point at them and references before referrers.
 *     response application/json  {"results": [{"name": …, "status": 201, "result": "created"}, …]}
 *              200 as a whole even when some parts were refused: each part has its own status,
 *              and a refused part carries the same `NARWHAL_…` code and message a PUT would get.
 *              A part after a refused narinfo is still processed.
 */

export const MISSING_PATHS_ROUTE = '/api/v1/missing-paths'
export const UPLOAD_BATCH_ROUTE = '/api/v1/upload-batch'

/** Most hash parts one missing-paths request may carry. */
export const MAX_MISSING_QUERY = 10_000
/** Most parts one upload-batch request may carry. */
export const MAX_BATCH_PARTS = 1_000

export interface MissingPathsRequest {
  hashParts: string[]
}

export interface MissingPathsResponse {
  missing: string[]
}

export interface BatchPartResult {
  /** The part's field name, e.g. `nar/<hash>.nar.zst` or `<hash>.narinfo`. */
  name: string
  /** The HTTP status a single PUT of this part would have answered. */
  status: number
  /** On success: `created`, `unchanged` or `merged`. */
  result?: string
  /** On refusal: the `NARWHAL_…` code and the message. */
  code?: string
  message?: string
}

export interface UploadBatchResponse {
  results: BatchPartResult[]
}
