/** Paths of the hook executables, from dist/test/pusher/ back to the package root. */
import { fileURLToPath } from 'node:url'

export const HOOK_SH = fileURLToPath(new URL('../../../bin/narwhal-hook', import.meta.url))
export const CLI = fileURLToPath(new URL('../../../dist/src/cli/main.js', import.meta.url))
