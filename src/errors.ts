/**
 * The one error vocabulary of narwhal.
 *
 * Every refusal the server or a tool can make has a stable code (`NARWHAL_…`) and the HTTP status
 * it maps to. Pure modules (formats, signatures) throw these too, so a parse error deep in the
 * narinfo parser reaches the client as the same code and a message that names the field.
 *
 * Nix prints the body of a failed upload to the user, so messages are short, plain and say which
 * rule was broken. They never contain file-system paths or OS error strings: those go to the log.
 */

export const ERROR_STATUS = {
  /** A name in the URL is not of the form the protocol allows (bad hash, bad extension). */
  NARWHAL_BAD_NAME: 400,
  /** The request is well-formed HTTP but its content breaks a format rule. */
  NARWHAL_BAD_REQUEST: 400,
  /** A narinfo that Nix itself would reject, or that narwhal refuses to store as written. */
  NARWHAL_NARINFO_INVALID: 400,
  /** A NAR body that does not hash to its name, or is not a NAR, or not in a known compression. */
  NARWHAL_NAR_INVALID: 400,
  /** Bytes that are not a well-formed Nix archive. */
  NARWHAL_NAR_MALFORMED: 400,
  /** A key or signature string that is not `name:base64` of the right length. */
  NARWHAL_KEY_INVALID: 400,
  /** No credentials, or credentials that are unknown, revoked or expired. */
  NARWHAL_UNAUTHORIZED: 401,
  /** Valid credentials without the scope the request needs. */
  NARWHAL_FORBIDDEN: 403,
  /** A narinfo without a signature from a trusted uploader key, or with a forged one. */
  NARWHAL_SIGNATURE_REJECTED: 403,
  /** The server has no trusted uploader key, so it cannot accept any narinfo. */
  NARWHAL_NO_TRUSTED_KEY: 403,
  /** The object is not in the cache. Always 404, never 500. */
  NARWHAL_NOT_FOUND: 404,
  /** A narinfo for a path the cache already holds with different content; or a target database that holds another cache (narwhal export --database). */
  NARWHAL_CONFLICT: 409,
  /** A body larger than the limit for its kind of object. */
  NARWHAL_TOO_LARGE: 413,
  /** A NAR compressed with a method narwhal cannot verify. */
  NARWHAL_UNSUPPORTED_COMPRESSION: 415,
  /** A narinfo whose NAR or references are not (yet) in the cache. */
  NARWHAL_MISSING_DEPENDENCY: 422,
  /** The client used up its request budget for the current window (rateLimit.*); Retry-After says when to come back. */
  NARWHAL_RATE_LIMITED: 429,
  /** A storage URL (`s3://BUCKET?…`) that is malformed or names an unknown parameter. */
  NARWHAL_STORAGE_URL_INVALID: 400,
  /** The object store cannot be used: unreachable, no such bucket, credentials refused. */
  NARWHAL_STORAGE_UNAVAILABLE: 503,
  /** A database URL (`--database`, NARWHAL_DATABASE_URL, config `database`) that is malformed or names an unknown parameter. */
  NARWHAL_DATABASE_URL_INVALID: 400,
  /** The metadata database cannot be used: unreachable, restarting, credentials refused, schema missing or newer. */
  NARWHAL_DATABASE_UNAVAILABLE: 503,
  /** Accepting the upload would eat into the free-space reserve of the data folder's disk. */
  NARWHAL_INSUFFICIENT_STORAGE: 507,
  /** The same NAR file is being removed by a collection or fsck right now; retry in a moment. */
  NARWHAL_BUSY: 503,
  /** An upstream cache could not provide what a client asked for: unreachable, too slow, or its bytes did not verify. */
  NARWHAL_UPSTREAM_FAILED: 502,
  /** Anything unexpected. The message sent to clients is generic. */
  NARWHAL_INTERNAL: 500
} as const

export type ErrorCode = keyof typeof ERROR_STATUS

export class NarwhalError extends Error {
  readonly code: ErrorCode
  readonly statusCode: number

  constructor (code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'NarwhalError'
    this.code = code
    this.statusCode = ERROR_STATUS[code]
  }
}

export function isNarwhalError (err: unknown): err is NarwhalError {
  return err instanceof NarwhalError
}
