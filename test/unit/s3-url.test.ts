/** The s3:// storage URL: Nix's parameters, narwhal's prefix, and a clear refusal of anything else. */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { isNarwhalError } from '../../src/errors.js'
import { parseS3Url } from '../../src/storage/s3-url.js'

function refusal (text: string): string {
  try {
    parseS3Url(text)
  } catch (err) {
    assert.ok(isNarwhalError(err), `not a NarwhalError: ${String(err)}`)
    assert.equal(err.code, 'NARWHAL_STORAGE_URL_INVALID')
    return err.message
  }
  assert.fail(`${text} was accepted`)
}

test('the form Nix uses for an S3-compatible service: endpoint, scheme, region', () => {
  assert.deepEqual(parseS3Url('s3://nix-cache?region=eu-west-1&endpoint=127.0.0.1:7480&scheme=http'), {
    bucket: 'nix-cache', region: 'eu-west-1', endpoint: 'http://127.0.0.1:7480', forcePathStyle: true, profile: undefined, prefix: ''
  })
})

test('defaults are Nix\'s: us-east-1, https, AWS itself with virtual-hosted addressing', () => {
  assert.deepEqual(parseS3Url('s3://nix-cache'), {
    bucket: 'nix-cache', region: 'us-east-1', endpoint: undefined, forcePathStyle: false, profile: undefined, prefix: ''
  })
  assert.equal(parseS3Url('s3://minio.example?endpoint=s3.example.org').endpoint, 'https://s3.example.org')
  // Dots in the name would break TLS for a virtual host, so auto turns to path-style, as in Nix.
  assert.equal(parseS3Url('s3://my.cache').forcePathStyle, true)
})

test('an endpoint given as a whole URL, as Nix also accepts, keeps its scheme and path', () => {
  assert.equal(parseS3Url('s3://cache?endpoint=http://[::1]:9000').endpoint, 'http://[::1]:9000')
  assert.equal(parseS3Url('s3://cache?endpoint=https://s3.example.org/base/').endpoint, 'https://s3.example.org/base')
  assert.equal(parseS3Url('s3://cache?endpoint=http://h:9000&scheme=http').endpoint, 'http://h:9000')
  assert.match(refusal('s3://cache?endpoint=http://h:9000&scheme=https'), /scheme https contradicts the endpoint/)
  assert.match(refusal('s3://cache?endpoint=http://key:secret@h:9000'), /credentials come from the AWS environment/)
  assert.match(refusal('s3://cache?endpoint=ftp://h'), /only http and https/)
})

test('addressing-style and profile', () => {
  assert.equal(parseS3Url('s3://cache?endpoint=h:1&addressing-style=virtual').forcePathStyle, false)
  assert.equal(parseS3Url('s3://cache?addressing-style=path').forcePathStyle, true)
  assert.equal(parseS3Url('s3://cache?profile=ci').profile, 'ci')
  assert.match(refusal('s3://cache?addressing-style=sideways'), /addressing-style "sideways" is not auto, path or virtual/)
  assert.match(refusal('s3://my.cache?addressing-style=virtual'), /without "\."/)
  assert.match(refusal('s3://cache?profile='), /profile is empty/)
})

test('prefix: every key starts with it, ending in one "/"', () => {
  assert.equal(parseS3Url('s3://cache?prefix=team-a').prefix, 'team-a/')
  assert.equal(parseS3Url('s3://cache?prefix=caches/team-a/').prefix, 'caches/team-a/')
  assert.equal(parseS3Url('s3://cache?prefix=').prefix, '')
  for (const bad of ['/abs', 'a//b', '../up', 'a/./b', 'sp ace', 'a%2Fb%3F']) {
    assert.match(refusal(`s3://cache?prefix=${encodeURIComponent(bad)}`), /prefix .*each "\/"-separated part/, bad)
  }
  assert.match(refusal('s3://cache/team-a'), /followed by a path "\/team-a"; a key prefix goes in the prefix= parameter/)
})

test('unknown parameters are refused by name, all of them, with the known ones listed', () => {
  const message = refusal('s3://cache?region=us-east-1&regoin=x&secret-key=/k&regoin=y')
  assert.match(message, /unknown parameters "regoin", "secret-key" \(known: region, endpoint, scheme, profile, addressing-style, prefix\)/)
  assert.match(refusal('s3://cache?region=a&region=b'), /parameter region is given more than once/)
})

test('bad bucket names, schemes, endpoints and regions are refused, naming the part', () => {
  assert.match(refusal('https://bucket'), /expected s3:\/\/BUCKET/)
  assert.match(refusal('s3://'), /bucket name "" is not a valid S3 bucket name/)
  for (const bucket of ['ab', 'Upper', '-dash', 'dash-', 'a..b', '192.168.1.1', 'a'.repeat(64), 'under_score', 'user@host']) {
    assert.match(refusal(`s3://${bucket}`), /is not a valid S3 bucket name/, bucket)
  }
  assert.match(refusal('s3://cache?scheme=ftp&endpoint=h'), /scheme "ftp" is neither http nor https/)
  assert.match(refusal('s3://cache?scheme=http'), /scheme http needs an endpoint/)
  for (const endpoint of ['h:0', 'h:65536', 'h:port', 'h/path', 'a b', '']) {
    assert.match(refusal(`s3://cache?endpoint=${encodeURIComponent(endpoint)}`), /is not HOST\[:PORT\] or an http\(s\) URL/, endpoint)
  }
  assert.match(refusal('s3://cache?region=EU%20West'), /region "EU West" is not a region name/)
})
