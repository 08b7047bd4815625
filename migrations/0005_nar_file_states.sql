-- narwhal metadata, version 5: NAR file states, so an upload and a collection of the same NAR
-- never need one transaction around the database and the blob store (src/cache/store-nar.ts,
-- src/cache/remove-paths.ts).
--
--   pending   claimed by an upload whose blob is being committed; not served, not nameable
--   live      committed: served, and narinfos may name it (every row before this version)
--   deleting  a collection or fsck is deleting its blob; the row goes once the blob is gone
--
-- A 'pending' row older than an hour is a crashed upload and is collected like a 'deleting' one.
ALTER TABLE nar_files ADD COLUMN state TEXT NOT NULL DEFAULT 'live' CHECK (state IN ('pending', 'live', 'deleting'));
-- The few rows not live, found without a scan (gc's first step).
CREATE INDEX nar_files_not_live ON nar_files(state) WHERE state <> 'live';
