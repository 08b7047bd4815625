/** The end-to-end daemon + post-build-hook test inside the trixie root, Nix 2.26 (daemon-hook-scenario.ts). */
import { daemonHookTest } from './daemon-hook-scenario.js'
import { TRIXIE_SIDE } from './daemon.js'

daemonHookTest(TRIXIE_SIDE)
