/**
 * Opens the metadata database: the one place with connection settings and the migration runner.
 *
 * Migrations are the numbered `migrations/NNNN_*.sql` files, applied in order, each in its own
 * transaction, with `PRAGMA user_version` recording the last one applied. They are append-only:
 * a shipped file is never edited, a change is a new file.
 */
import { readdirSync, readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import path from 'node:path'
import Database from 'better-sqlite3'

export type Db = Database.Database

/** The migrations folder ships next to dist/ and src/ at the package root. */
export const MIGRATIONS_DIR = fileURLToPath(new URL('../../../migrations/', import.meta.url))

export function openDatabase (file: string, options: { readonly?: boolean } = {}): Db {
  const db = new Database(file, { readonly: options.readonly ?? false })
  // WAL lets the server's readers, the CLI's token commands and a writer work at once.
  db.pragma('journal_mode = WAL')
  // FULL: a narinfo that was answered 200 must survive a power cut, like the NAR it points at.
  db.pragma('synchronous = FULL')
  db.pragma('foreign_keys = ON')
  // Several processes share the file (the server's workers, its gc thread, `narwhal token …`);
  // a writer waits for the others instead of failing. Their write transactions are all short (a
  // NAR's row and rename, one flush of read times, one gc batch of 100 paths), so 5 s holds a long
  // queue of them, even with 8 workers flushing read times every 5 s.
  db.pragma('busy_timeout = 5000')
  return db
}

interface Migration { version: number, name: string, sql: string }

export function listMigrations (dir = MIGRATIONS_DIR): Migration[] {
  return readdirSync(dir)
    .filter(f => /^\d{4}_[a-z0-9_]+\.sql$/.test(f))
    .sort()
    .map(f => ({ version: Number(f.slice(0, 4)), name: f, sql: readFileSync(path.join(dir, f), 'utf8') }))
}

/** Applies pending migrations; returns the names applied. */
export function migrate (db: Db, dir = MIGRATIONS_DIR): string[] {
  const applied: string[] = []
  for (const m of listMigrations(dir)) {
    // The version is read under the write lock: two processes opening a new database at once
    // (the pusher and `narwhal queue wait`) would otherwise both apply it ("table already exists").
    const done = db.transaction((): boolean => {
      if (Number(db.pragma('user_version', { simple: true })) >= m.version) return false
      db.exec(m.sql)
      db.pragma(`user_version = ${m.version}`)
      return true
    }).immediate()
    if (done) applied.push(m.name)
  }
  return applied
}
