/** The end-to-end daemon + post-build-hook test with the host's Nix 2.8 (daemon-hook-scenario.ts). */
import { daemonHookTest } from './daemon-hook-scenario.js'
import { HOST_SIDE } from './daemon.js'

daemonHookTest(HOST_SIDE)
