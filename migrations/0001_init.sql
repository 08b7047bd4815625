-- narwhal metadata, version 1.
-- NAR bytes live on disk (see src/storage/layout.ts); this database says what they are and which
-- narinfos point at them. Rows are written only after the bytes they describe were verified.

-- One row per NAR file received and verified: the compressed bytes hash to file_hash, and they
-- decompress (with the detected compression) to a well-formed NAR of nar_hash/nar_size.
CREATE TABLE nar_files (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  file_hash TEXT NOT NULL UNIQUE,          -- nix32 sha256 of the bytes as stored
  file_size INTEGER NOT NULL,
  compression TEXT NOT NULL,               -- detected from the bytes: none, xz, zstd, bzip2, gzip, br
  nar_hash TEXT NOT NULL,                  -- nix32 sha256 of the decompressed NAR
  nar_size INTEGER NOT NULL,
  created_at INTEGER NOT NULL,             -- unix milliseconds
  last_accessed_at INTEGER NOT NULL
);

-- One row per store path the cache serves. The narinfo text is rendered once at write time so a
-- read is a single indexed lookup.
CREATE TABLE narinfos (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  hash_part TEXT NOT NULL UNIQUE,          -- the 32-char nix32 hash of the store path
  store_path TEXT NOT NULL,
  nar_file_id INTEGER NOT NULL REFERENCES nar_files(id),
  nar_hash TEXT NOT NULL,
  nar_size INTEGER NOT NULL,
  deriver TEXT,
  ca TEXT,
  sigs TEXT NOT NULL,                      -- newline-separated `name:base64`
  narinfo TEXT NOT NULL,                   -- exactly what GET returns
  created_at INTEGER NOT NULL,
  last_accessed_at INTEGER NOT NULL
);

-- The references of each narinfo, by hash part, so closures can be walked in SQL.
CREATE TABLE narinfo_refs (
  narinfo_id INTEGER NOT NULL REFERENCES narinfos(id) ON DELETE CASCADE,
  ref_hash_part TEXT NOT NULL,
  ref_base_name TEXT NOT NULL,
  PRIMARY KEY (narinfo_id, ref_hash_part)
);
CREATE INDEX narinfo_refs_by_ref ON narinfo_refs(ref_hash_part);
CREATE INDEX narinfos_by_nar_file ON narinfos(nar_file_id);

-- Small protocol files that are not NARs: build logs, .ls listings, realisations, debuginfo
-- links. Stored as sent (with the Content-Encoding Nix 2.32+ may put on them).
CREATE TABLE aux_files (
  kind TEXT NOT NULL CHECK (kind IN ('log', 'ls', 'realisation', 'debuginfo')),
  name TEXT NOT NULL,
  content_type TEXT NOT NULL,
  content_encoding TEXT,
  body BLOB NOT NULL,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (kind, name)
);

-- Access tokens. Only a SHA-256 of each token is kept; the token itself is shown once.
CREATE TABLE tokens (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  name TEXT NOT NULL,
  scope TEXT NOT NULL CHECK (scope IN ('read', 'push', 'admin')),
  token_hash TEXT NOT NULL UNIQUE,
  created_at INTEGER NOT NULL,
  expires_at INTEGER,
  revoked_at INTEGER
);
