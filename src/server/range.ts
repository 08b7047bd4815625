/**
 * The one form of HTTP Range narwhal answers: a single `bytes=` range. Nix resumes an interrupted
 * NAR download with `Range: bytes=<offset>-`; other clients may ask for `a-b` or a suffix `-n`.
 * Several ranges in one request are answered with the whole body, which RFC 9110 allows.
 */

export type RangeAnswer =
  | { kind: 'whole' }
  | { kind: 'partial', start: number, end: number } // inclusive end, as in Content-Range
  | { kind: 'unsatisfiable' }

export function parseRange (header: string | undefined, size: number): RangeAnswer {
  if (header === undefined) return { kind: 'whole' }
  const match = /^bytes=(\d*)-(\d*)$/.exec(header.trim())
  if (match === null) return { kind: 'whole' }
  const [, first = '', last = ''] = match
  if (first === '' && last === '') return { kind: 'whole' }
  if (first === '') {
    const suffix = Number(last)
    if (suffix === 0 || size === 0) return { kind: 'unsatisfiable' }
    return { kind: 'partial', start: Math.max(0, size - suffix), end: size - 1 }
  }
  const start = Number(first)
  if (start >= size) return { kind: 'unsatisfiable' }
  const end = last === '' ? size - 1 : Math.min(Number(last), size - 1)
  if (end < start) return { kind: 'whole' }
  return { kind: 'partial', start, end }
}
