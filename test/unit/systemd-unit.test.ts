/**
 * contrib/systemd/narwhal.service is checked by systemd itself: `systemd-analyze verify` must
 * accept it without a word (it exits 0 on unknown or misspelt keys, so its output must be empty
 * too), and `systemd-analyze security --offline` must rate its exposure at 2.0 or below.
 * test/run.sh installs Debian's systemd package when systemd-analyze is missing.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { run } from '../helpers/nix.js'

const UNIT = fileURLToPath(new URL('../../../contrib/systemd/narwhal.service', import.meta.url))

async function analyze (args: string[]): Promise<{ code: number, stdout: string, stderr: string }> {
  if ((await run('sh', ['-c', 'command -v systemd-analyze'])).code !== 0) {
    assert.fail('systemd-analyze is missing: apt-get install systemd (test/run.sh does)')
  }
  return await run('systemd-analyze', args)
}

test('systemd-analyze verify accepts narwhal.service without a warning', async () => {
  const result = await analyze(['verify', UNIT])
  assert.equal(result.code, 0, result.stderr)
  assert.equal(result.stderr.trim() + result.stdout.trim(), '', 'verify printed warnings')
})

test('narwhal.service is hardened: exposure 2.0 or below, and the directives the README promises', async () => {
  const result = await analyze(['security', '--offline=true', '--threshold=20', UNIT])
  assert.equal(result.code, 0, `exposure above 2.0:\n${result.stdout.split('\n').slice(-3).join('\n')}`)
  const text = readFileSync(UNIT, 'utf8')
  const settings = new Map(text.split('\n').filter(l => /^[A-Za-z]+=/.test(l)).map(l => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]))
  for (const [key, value] of Object.entries({
    User: 'narwhal',
    StateDirectory: 'narwhal/cache',
    ProtectSystem: 'strict',
    NoNewPrivileges: 'yes',
    PrivateTmp: 'yes',
    RestrictAddressFamilies: 'AF_INET AF_INET6 AF_UNIX',
    CapabilityBoundingSet: ''
  })) {
    assert.equal(settings.get(key), value, `${key}=${value}`)
  }
  // The server finds its data folder where systemd made it.
  assert.match(text, /^Environment=NARWHAL_DATA=\/var\/lib\/narwhal\/cache$/m)
})
