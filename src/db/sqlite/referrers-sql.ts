/**
 * The SQL removal and its guard (store.ts) start from: `doomed` holds the
 * hash parts given as a JSON list (the first parameter) plus, transitively, every narinfo that
 * references one of them. Shared so the two can never disagree on what a removal takes along.
 */
export const REFERRERS_CTE = `WITH RECURSIVE doomed(hash_part) AS (
  SELECT value FROM json_each(?)
  UNION
  SELECT n.hash_part FROM narinfo_refs r
    JOIN doomed d ON r.ref_hash_part = d.hash_part
    JOIN narinfos n ON n.id = r.narinfo_id)`
