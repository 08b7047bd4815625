-- narwhal metadata, version 2: what garbage collection needs (src/cache/gc.ts).
--
-- Last use is narinfos.last_accessed_at and nar_files.last_accessed_at from version 1, now kept
-- up to date: the server notes reads in memory and writes them in one short transaction every few
-- seconds (src/cache/access-tracker.ts). They get no index on purpose: a collection reads every
-- row anyway (a path's place in the eviction order depends on all its referrers), and an index
-- would turn every one of those frequent updates into an index rewrite as well.

-- A pinned path and its whole closure (its references, transitively) are never collected.
CREATE TABLE pins (
  hash_part TEXT PRIMARY KEY,      -- of the pinned store path
  store_path TEXT NOT NULL,
  keep_until INTEGER,              -- unix milliseconds; NULL: until `narwhal pin remove`
  created_at INTEGER NOT NULL,
  note TEXT
);

-- One row per collection that ran for real (dry runs leave none), from `narwhal gc` or the
-- server's schedule: what it removed and what was left, for the log and for /metrics, which
-- any server process can answer from here whichever process collected.
CREATE TABLE gc_runs (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  started_at INTEGER NOT NULL,
  finished_at INTEGER NOT NULL,
  trigger TEXT NOT NULL CHECK (trigger IN ('cli', 'schedule')),
  store_paths INTEGER NOT NULL,     -- narinfos removed
  nar_files INTEGER NOT NULL,       -- NAR files removed (evicted and unnamed)
  bytes INTEGER NOT NULL,           -- their size
  remaining_bytes INTEGER NOT NULL  -- NAR file bytes the cache held afterwards
);
