/** Who the rate limit counts a request as: IPv4 as is, IPv6 by its /64, mapped IPv4 as IPv4. */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { addressKey, tokenKey } from '../../src/server/client-key.js'

test('IPv4 addresses count one by one', () => {
  assert.equal(addressKey('192.0.2.1'), 'ip:192.0.2.1')
  assert.notEqual(addressKey('192.0.2.1'), addressKey('192.0.2.2'))
})

test('an IPv4 peer on a dual-stack socket counts as its IPv4 address', () => {
  assert.equal(addressKey('::ffff:192.0.2.1'), 'ip:192.0.2.1')
  assert.equal(addressKey('::ffff:c000:201'), 'ip:192.0.2.1')
})

test('IPv6 addresses count by their /64, however they are written', () => {
  const key = addressKey('2001:db8:1:2::1')
  assert.equal(key, 'ip:2001:db8:1:2::/64')
  assert.equal(addressKey('2001:0db8:0001:0002:ffff:ffff:ffff:ffff'), key, 'the whole /64 is one client')
  assert.equal(addressKey('2001:db8:1:2:0:0:0:1%eth0'), key, 'a zone id does not matter')
  assert.notEqual(addressKey('2001:db8:1:3::1'), key, 'the next /64 is another client')
  assert.equal(addressKey('::1'), 'ip:0:0:0:0::/64')
  assert.equal(addressKey('fe80::1:2:3:4'), 'ip:fe80:0:0:0::/64')
  assert.equal(addressKey('64:ff9b:1:2::192.0.2.1'), 'ip:64:ff9b:1:2::/64', 'an embedded IPv4 tail is parsed')
})

test('a token is its own client, apart from any address', () => {
  assert.equal(tokenKey(7), 'token:7')
  assert.notEqual(tokenKey(7), addressKey('7'))
})
