-- narwhal pusher queue, version 1. Its own database in the queue folder (queue.sqlite), separate
-- from the server's: the pusher usually runs on a build machine that has no server data folder.

-- One row per recorded build (a spool entry from the hook) or per `narwhal push` request.
CREATE TABLE jobs (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  job_id TEXT NOT NULL UNIQUE,             -- the spool file name: moving an entry in twice is a no-op
  drv_path TEXT NOT NULL,                  -- '' when unknown
  out_paths TEXT NOT NULL,                 -- space-separated, as recorded; empty on Nix 2.8
  state TEXT NOT NULL CHECK (state IN ('pending', 'running', 'done', 'failed')),
  attempts INTEGER NOT NULL DEFAULT 0,     -- transient failures so far
  next_attempt_at INTEGER NOT NULL,        -- unix milliseconds; a pending job waits until then
  last_error TEXT,                         -- why the last attempt did not finish (transient or not)
  note TEXT,                               -- e.g. outputs dropped because Nix collected them
  paths_total INTEGER NOT NULL DEFAULT 0,  -- closure size at the last attempt
  paths_uploaded INTEGER NOT NULL DEFAULT 0,
  bytes_uploaded INTEGER NOT NULL DEFAULT 0,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
);
CREATE INDEX jobs_by_state ON jobs(state, next_attempt_at);

-- Store paths that were not uploaded for good: refused by the server (with its reason), or
-- dropped because they left the store before the upload. A later success removes the row.
CREATE TABLE path_outcomes (
  store_path TEXT PRIMARY KEY,
  state TEXT NOT NULL CHECK (state IN ('failed', 'dropped')),
  reason TEXT NOT NULL,
  job_seq INTEGER,
  updated_at INTEGER NOT NULL
);
