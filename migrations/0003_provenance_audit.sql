-- narwhal metadata, version 3: who put each path into the cache and why it was trusted, and an
-- audit log of every write and refusal (src/cache/provenance.ts, src/cache/audit-log.ts).

-- One row per accepted narinfo write that changed the cache: the upload that created the path,
-- and each later one that merged new signatures. Written in the narinfo's own transaction, and
-- deleted with the narinfo (ON DELETE CASCADE), so gc and fsck --repair take it along.
CREATE TABLE provenance (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  narinfo_id INTEGER NOT NULL REFERENCES narinfos(id) ON DELETE CASCADE,
  accepted_at INTEGER NOT NULL,            -- unix milliseconds
  outcome TEXT NOT NULL CHECK (outcome IN ('created', 'merged')),
  token_id INTEGER,                        -- the push token's id (tokens are revoked, never deleted); NULL when none
  token_name TEXT,                         -- its name when the write was accepted
  key_names TEXT NOT NULL,                 -- newline-separated names of the trusted keys whose signatures verified
  client_address TEXT,                     -- the client as the server saw it (trustProxy applied); NULL when none
  upstream TEXT                            -- for a path pulled through from an upstream cache: its name; NULL for pushes
);
CREATE INDEX provenance_by_narinfo ON provenance(narinfo_id);
CREATE INDEX provenance_by_time ON provenance(accepted_at);

-- Every write request and every refusal of one, oldest first, never updated. Capped at
-- audit.maxEntries rows: past it the oldest rows are deleted, so the log cannot fill the disk.
CREATE TABLE audit_log (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  at INTEGER NOT NULL,                     -- unix milliseconds
  token_id INTEGER,
  token_name TEXT,
  client_address TEXT,
  method TEXT NOT NULL,                    -- PUT, POST, or BATCH for one part of an upload batch
  subject TEXT NOT NULL,                   -- the store path when known, else the URL path (or batch part name)
  hash_part TEXT,                          -- of the store path, for narinfo writes
  file_hash TEXT,                          -- of the NAR file, for NAR writes
  outcome TEXT NOT NULL,                   -- created, merged, unchanged, accepted or refused
  status INTEGER NOT NULL,                 -- the HTTP status answered
  code TEXT,                               -- the NARWHAL_* refusal code
  reason TEXT                              -- the refusal's message, at most 300 characters
);
CREATE INDEX audit_log_by_time ON audit_log(at);
CREATE INDEX audit_log_by_hash ON audit_log(hash_part) WHERE hash_part IS NOT NULL;
CREATE INDEX audit_log_by_file ON audit_log(file_hash) WHERE file_hash IS NOT NULL;
CREATE INDEX audit_log_by_token ON audit_log(token_id) WHERE token_id IS NOT NULL;
