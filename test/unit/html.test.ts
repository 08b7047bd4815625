/**
 * The pages' one escaping helper (server/html.ts): every interpolated value is text, never markup.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { escapeHtml, html } from '../../src/server/html.js'

test('escapeHtml turns every character that could start markup or end an attribute into an entity', () => {
  assert.equal(escapeHtml('<img src=x onerror="a(\'b\')">&amp;'), '&lt;img src=x onerror=&quot;a(&#39;b&#39;)&quot;&gt;&amp;amp;')
  assert.equal(escapeHtml('nix-2.8 ?=+_.'), 'nix-2.8 ?=+_.')
})

test('html escapes every value, nested arrays included, and keeps markup it made itself', () => {
  const name = '<script>alert(1)</script>'
  const out = html`<ul>${[name, html`<li>${name}</li>`, [null, undefined, false, 3]]}</ul><a title="${'" onmouseover="x'}">`.toString()
  assert.equal(out, '<ul>&lt;script&gt;alert(1)&lt;/script&gt;<li>&lt;script&gt;alert(1)&lt;/script&gt;</li>3</ul>' +
    '<a title="&quot; onmouseover=&quot;x">')
})
