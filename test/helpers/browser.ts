/**
 * A real browser for the page tests: Debian's chromium (test/run.sh installs it) driven by
 * playwright-core, headless, with a fresh profile per launch and nothing that phones home.
 */
import { existsSync } from 'node:fs'
import type { TestContext } from 'node:test'
import { chromium, type BrowserContext } from 'playwright-core'
import { tempDir } from './nix.js'

export const CHROMIUM = '/usr/bin/chromium'

const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync']

/** A browser context, closed when the test ends. `credentials`: HTTP Basic, as a person would type them. */
export async function openBrowser (t: TestContext, credentials?: { username: string, password: string }): Promise<BrowserContext> {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: apt-get install chromium (test/run.sh does, as root)`)
  const context = await chromium.launchPersistentContext(tempDir('narwhal-chromium-'), {
    executablePath: CHROMIUM,
    headless: true,
    args: ARGS,
    viewport: { width: 1100, height: 900 },
    ...(credentials === undefined ? {} : { httpCredentials: credentials })
  })
  t.after(async () => { await context.close() })
  return context
}
