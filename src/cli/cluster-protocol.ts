/**
 * What the primary of `narwhal serve --workers N` (cli/cluster.ts) and its workers
 * (cli/cluster-worker.ts) say to each other, in a module of its own so that a worker can read it
 * without loading the primary's code. The /metrics messages live in server/cluster-metrics.ts.
 */

/** The environment variable that carries the primary's configuration (JSON) to a worker. */
export const CONFIG_ENV = 'NARWHAL_INTERNAL_WORKER_CONFIG'

/** Primary to worker: close gracefully and exit; this worker is not to be restarted. */
export const SHUTDOWN_MESSAGE = 'narwhal:shutdown'
