/**
 * `narwhal hook`: the post-build-hook entry, for setups that prefer one binary. It records
 * DRV_PATH and OUT_PATHS in the spool (src/pusher/spool.ts) and exits 0 whatever happens: a hook
 * that fails fails the user's build, and one that waits blocks every build of the daemon.
 *
 * bin/narwhal-hook does the same from POSIX sh without starting Node.js, and is the one to name
 * in nix.conf (see bench/hook-overhead.ts for the measured difference).
 */
import { queueDirFromEnv } from '../../pusher/queue-dir.js'
import { spoolDir, writeSpoolEntry } from '../../pusher/spool.js'

export async function hookCommand (_args: string[]): Promise<number> {
  const drvPath = process.env.DRV_PATH ?? ''
  const outPaths = process.env.OUT_PATHS ?? ''
  let dir = '(unknown)'
  try {
    const queueDir = queueDirFromEnv()
    dir = spoolDir(queueDir)
    writeSpoolEntry(queueDir, drvPath, outPaths)
  } catch (err) {
    // Never fail the build; say what was lost so it can be pushed by hand.
    const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message
    process.stderr.write(`narwhal hook: could not record the build of ${drvPath === '' ? outPaths : drvPath} in ${dir} ` +
      `(${code}); the build is fine, but it will not be pushed unless you run: narwhal push ${outPaths === '' ? drvPath : outPaths}\n`)
  }
  return 0
}
