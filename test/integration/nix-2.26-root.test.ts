/**
 * scripts/nix-2.26-root.sh, the maker of the second client's root: a machine that cannot make it
 * fails with a message naming the step, a half-made root never counts and is cleared by the next
 * run, the root in use is found in a blink, and no mount is ever left on the host.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { chmodSync, copyFileSync, existsSync, readdirSync, readFileSync } from 'node:fs'
import path from 'node:path'
import { NIX_226_ROOT, NIX_226_SCRIPT, run, runInNix226Root, tempDir } from '../helpers/nix.js'

const isRoot = process.getuid?.() === 0

function mountsUnder (dir: string): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8').split('\n')
    .map(line => line.split(' ')[4] ?? '')
    .filter(target => target === dir || target.startsWith(dir + '/'))
}

test('not as root: prepare fails naming the step', { skip: isRoot ? false : 'needs root to become another user' }, async () => {
  // A copy nobody can read: the checkout may be in a folder only root may enter.
  const dir = tempDir('narwhal-root-script-')
  chmodSync(dir, 0o755)
  const script = path.join(dir, 'nix-2.26-root.sh')
  copyFileSync(NIX_226_SCRIPT, script)
  chmodSync(script, 0o755)
  const result = await run('su', ['nobody', '-s', '/bin/sh', '-c', `${script} prepare`])
  assert.notEqual(result.code, 0)
  assert.match(result.stderr, /cannot make the Nix 2\.26 root at .*: step "check that this runs as root" failed/)
})

test('no mirror: prepare fails naming debootstrap; the half-made root is cleared by the next run', { skip: isRoot ? false : 'needs root' }, async () => {
  const dir = tempDir('narwhal-root-test-')
  const env = { ...process.env, NARWHAL_NIX226_ROOT: path.join(dir, 'nix'), NARWHAL_DEBIAN_MIRROR: 'http://127.0.0.1:9/debian' }
  const first = await run(NIX_226_SCRIPT, ['prepare'], { env })
  assert.notEqual(first.code, 0)
  assert.match(first.stderr, /step "debootstrap --variant=minbase trixie from http:\/\/127\.0\.0\.1:9\/debian" failed: .*Failed getting release file/)
  const partials = readdirSync(dir).filter(name => name.startsWith('nix.partial-') && !name.endsWith('.log'))
  assert.equal(partials.length, 1, 'the attempt is a partial folder')
  assert.ok(!existsSync(path.join(dir, 'nix')), 'nothing in the place of the root')

  const second = await run(NIX_226_SCRIPT, ['prepare'], { env })
  assert.notEqual(second.code, 0)
  const after = readdirSync(dir).filter(name => name.startsWith('nix.partial-') && !name.endsWith('.log'))
  assert.equal(after.length, 1)
  assert.notEqual(after[0], partials[0], 'the earlier partial folder was removed')
  assert.deepEqual(mountsUnder(dir), [])
})

test('the root in use: prepare finds it valid at once; commands inside leave no mount on the host', { skip: isRoot ? false : 'needs root' }, async () => {
  const started = Date.now()
  const prepared = await run(NIX_226_SCRIPT, ['prepare'])
  assert.equal(prepared.code, 0, prepared.stderr)
  assert.equal(prepared.stdout.trim(), NIX_226_ROOT)
  assert.ok(Date.now() - started < 10_000, 'no rebuild')
  const version = await runInNix226Root(['nix', '--version'])
  assert.equal(version.code, 0, version.stderr)
  assert.match(version.stdout, /^nix \(Nix\) 2\.26\.\d+$/m)
  assert.deepEqual(mountsUnder(NIX_226_ROOT), [], 'the mounts lived only in the command\'s namespace')
})
