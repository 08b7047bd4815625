/**
 * The pusher reads `nix path-info --json --recursive` of whichever Nix the machine has: an array
 * from Nix 2.8, an object keyed by store path from Nix 2.26. Checked against what each client's
 * legacy `nix-store --query` says about the same closure.
 */
import assert from 'node:assert/strict'
import path from 'node:path'
import { NixCommandError, parsePathInfoJson } from '../../src/pusher/closure.js'
import { formatNixHash } from '../../src/nix/hash.js'
import { buildClosure, testEachClient } from '../helpers/nix.js'

testEachClient('the pusher parses this client\'s nix path-info --json', async (_t, client) => {
  const closure = await buildClosure({ client })
  const text = await client.nixOk(['path-info', '--json', '--recursive', closure.top])
  assert.equal(Array.isArray(JSON.parse(text)), client.version === '2.8', 'the shape of this client')
  const infos = parsePathInfoJson(text)
  assert.deepEqual(infos.map(i => i.path).sort(), [...closure.all].sort())
  for (const info of infos) {
    const hash = (await client.ok('nix-store', ['--query', '--hash', info.path])).trim()
    assert.equal(formatNixHash(info.narHash), hash, `NarHash of ${info.path}`)
    const size = (await client.ok('nix-store', ['--query', '--size', info.path])).trim()
    assert.equal(info.narSize, Number(size))
    const refs = (await client.ok('nix-store', ['--query', '--references', info.path])).trim().split('\n').filter(r => r !== '')
    assert.deepEqual([...info.references].sort(), refs.map(r => path.basename(r)).sort())
  }
  assert.equal(infos.find(i => i.path === closure.top)?.deriver, path.basename(closure.drv))
  assert.equal(infos.find(i => i.path === closure.data)?.deriver, undefined, 'an added path has no deriver')

  // A path that is not in the store: 2.8 says valid: false, 2.26 maps it to null.
  const missing = `/nix/store/${'a'.repeat(32)}-missing`
  const result = await client.nix(['path-info', '--json', missing])
  assert.equal(Array.isArray(JSON.parse(result.stdout)), client.version === '2.8')
  assert.throws(() => parsePathInfoJson(result.stdout), (err: unknown) => err instanceof NixCommandError && /is not valid/.test(err.message))
})
