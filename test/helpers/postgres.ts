/**
 * The real PostgreSQL for the PostgreSQL tests, started by test/run.sh through
 * scripts/test-engines/postgres.sh, which passes a superuser's URL in NARWHAL_TEST_DATABASE_URL
 * and its folder in NARWHAL_TEST_POSTGRES_DIR (for restarts).
 *
 * Each test makes its own database (narwhal never creates one) and drops it afterwards. Locating
 * the engine and making a database live in scripts/test-engines/engines.ts (the benchmarks use them too).
 */
import path from 'node:path'
import type { PostgresEngine } from '../../scripts/test-engines/engines.js'
import { runOk } from './nix.js'

export { adminQuery, createDatabase, postgresEngine, type PostgresEngine, type TestDatabase } from '../../scripts/test-engines/engines.js'

/** Restarts the server (fast shutdown: every connection is closed), as an operator's restart does. */
export async function restartPostgres (engine: PostgresEngine): Promise<void> {
  await runOk(path.resolve('scripts/test-engines/postgres.sh'), ['restart', engine.dir])
}
