/**
 * The small protocol files that are not NARs (build logs, .ls listings, realisations, debuginfo
 * links): stored as sent, with the Content-Encoding Nix 2.32+ may give them, and served back the
 * same way. The names are the routes' to check (server/routes/aux-files.ts).
 */
import type { AuxFile, AuxKind, MetadataStore } from '../db/metadata-store.js'
import { NarwhalError } from '../errors.js'

export type { AuxFile, AuxKind }

export async function auxFile (metadata: MetadataStore, kind: AuxKind, name: string): Promise<AuxFile | undefined> {
  return await metadata.aux.get(kind, name)
}

/**
 * Stores one file. `encoding` is the request's Content-Encoding (none, '' and identity mean
 * none); a JSON kind's body must be JSON unless it is encoded (then it is stored as sent).
 */
export async function putAuxFile (metadata: MetadataStore, kind: AuxKind, name: string,
  file: { body: Buffer, encoding: string | undefined, contentType: string, json: boolean }): Promise<void> {
  const { body, encoding, contentType, json } = file
  const contentEncoding = encoding === undefined || encoding === '' || encoding === 'identity' ? null : encoding
  if (json && contentEncoding === null) {
    try {
      JSON.parse(body.toString('utf8'))
    } catch {
      throw new NarwhalError('NARWHAL_BAD_REQUEST', `${kind} ${name}: body is not JSON`)
    }
  }
  await metadata.aux.put(kind, name, { contentType, contentEncoding, body }, Date.now())
}
