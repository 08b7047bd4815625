-- narwhal metadata, version 4: narinfos pulled from upstream caches (src/upstream/).
--
-- A narinfo an upstream served, once verified (signed by one of that upstream's configured keys),
-- is kept here with its URL rewritten to narwhal's NAR route: it is served from here until its NAR
-- is fetched, and it survives restarts and the upstream's outages. When a client asks for the NAR,
-- it is fetched once, verified like an upload, and then the NAR file and the narinfo become
-- ordinary rows of nar_files and narinfos (gc'd like the rest); the row here stays, so a path
-- evicted by gc is still offered and fetched again on demand, and so which upstream a path came
-- from can be joined on hash_part.
CREATE TABLE upstream_narinfos (
  hash_part TEXT PRIMARY KEY,              -- the 32-char nix32 hash of the store path
  store_path TEXT NOT NULL,
  upstream TEXT NOT NULL,                  -- the upstream's URL, as configured
  nar_url TEXT NOT NULL,                   -- the NAR's URL on that upstream, as its narinfo said
  file_hash TEXT NOT NULL,                 -- nix32 sha256 of the compressed NAR (FileHash)
  file_size INTEGER NOT NULL,
  compression TEXT NOT NULL,
  nar_hash TEXT NOT NULL,
  nar_size INTEGER NOT NULL,
  refs TEXT NOT NULL,                      -- space-separated reference base names
  narinfo TEXT NOT NULL,                   -- exactly what GET returns (the upstream's text, URL rewritten)
  created_at INTEGER NOT NULL,             -- unix milliseconds
  refused_at INTEGER                       -- set when the NAR did not match: no longer served
);
CREATE INDEX upstream_narinfos_by_file ON upstream_narinfos(file_hash);
