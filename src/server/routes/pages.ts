/**
 * The pages for people, server-rendered HTML (html.ts), read-only:
 *
 *   GET /                what this cache is, the nix.conf lines to use it, headline figures, search
 *   GET /search?q=…      paths by hash (prefix, or a whole store path) or by a piece of the name
 *   GET /path/<hash32>   one path: narinfo fields, signatures, references and referrers, provenance,
 *                        pin, and the commands that fetch it
 *
 * They go through the same auth hook as every read (server/auth.ts): in private mode they need a
 * read token and answer a bare 401 without one. No page changes anything.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { PathDetails, ProvenanceRow } from '../../cache/browse.js'
import { formatBytes } from '../../config/units.js'
import { formatNixHash } from '../../nix/hash.js'
import { HASH_PART_PATTERN, STORE_DIR } from '../../nix/store-path.js'
import { html, page, PAGE_HEADERS, type SafeHtml } from '../html.js'

/** A Host header we are willing to print into nix.conf lines and shell commands. */
const HOST = /^(?:[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])(?::\d{1,5})?$/
const MAX_QUERY = 300

/** The cache's URL as the browser reached it, or the listen address when the Host header is odd. */
function cacheUrl (request: FastifyRequest, listen: { host: string, port: number }): string {
  const protocol = request.protocol === 'https' ? 'https' : 'http'
  if (HOST.test(request.host)) return `${protocol}://${request.host}`
  return `http://${listen.host.includes(':') ? `[${listen.host}]` : listen.host}:${listen.port}`
}

/** One shell word. */
function shellQuote (text: string): string {
  return /^[A-Za-z0-9@%+=:,./_-]+$/.test(text) ? text : `'${text.replaceAll("'", "'\\''")}'`
}

function time (ms: number): string {
  return new Date(ms).toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC')
}

function bytes (n: number): SafeHtml {
  return n < 1024 ? html`${n} bytes` : html`${formatBytes(n)} <span class="muted">(${n.toLocaleString('en')} bytes)</span>`
}

function pathLink (hashPart: string, storePath: string): SafeHtml {
  return html`<a href="/path/${hashPart}">${storePath}</a>`
}

function send (reply: FastifyReply, status: number, title: string, body: SafeHtml, query = ''): FastifyReply {
  return reply.code(status).headers(PAGE_HEADERS).send(page(title, body, query))
}

function provenanceTable (rows: ProvenanceRow[], showAddress: boolean): SafeHtml {
  if (rows.length === 0) return html`<p class="muted">No provenance recorded (the path was written before narwhal kept it).</p>`
  return html`<table><tr><th>when</th><th>what</th><th>token</th><th>verified by</th><th>client</th><th>upstream</th></tr>
${rows.map(r => html`<tr><td>${time(r.acceptedAt)}</td><td>${r.outcome}</td>
<td>${r.tokenName === null ? html`<span class="muted">none</span>` : html`${r.tokenName} <span class="muted">(id ${r.tokenId})</span>`}</td>
<td>${r.keyNames.join(', ')}</td>
<td>${showAddress ? r.clientAddress ?? '' : html`<span class="muted">hidden on a public cache</span>`}</td>
<td>${r.upstream ?? html`<span class="muted">none (pushed)</span>`}</td></tr>`)}
</table>`
}

function pathPage (d: PathDetails, url: string, showAddress: boolean): SafeHtml {
  const name = d.storePath.slice(STORE_DIR.length + 34)
  const trusted = d.signatures.filter(s => s.trusted).length
  return html`<h1>${name}</h1>
<p><code>${d.storePath}</code></p>
<h2>Fetch it</h2>
<pre>nix-store -r ${shellQuote(d.storePath)}
nix copy --from ${shellQuote(url)} ${shellQuote(d.storePath)}</pre>
<p class="muted">With the nix.conf lines on the <a href="/">front page</a>; <code>nix copy --from</code> needs the key in <code>trusted-public-keys</code> too.</p>
<h2>Narinfo</h2>
<table>
<tr><th>StorePath</th><td>${d.storePath}</td></tr>
<tr><th>URL</th><td>${d.url}</td></tr>
<tr><th>Compression</th><td>${d.compression}</td></tr>
<tr><th>FileHash</th><td>sha256:${d.fileHash}</td></tr>
<tr><th>FileSize</th><td>${bytes(d.fileSize)}</td></tr>
<tr><th>NarHash</th><td>${formatNixHash(d.info.narHash)}</td></tr>
<tr><th>NarSize</th><td>${bytes(d.narSize)}</td></tr>
<tr><th>Deriver</th><td>${d.info.deriver ?? html`<span class="muted">unknown</span>`}</td></tr>
${d.info.ca === undefined ? '' : html`<tr><th>CA</th><td>${d.info.ca}</td></tr>`}
<tr><th>Uploaded</th><td>${time(d.createdAt)}</td></tr>
<tr><th>Pinned</th><td>${d.pin === undefined
    ? html`no`
    : d.pin.keepUntil === null
      ? html`<span class="ok">yes</span>, until unpinned${d.pin.note === null ? '' : html` — ${d.pin.note}`}`
      : html`${d.pin.keepUntil > Date.now() ? html`<span class="ok">yes</span>, until` : 'expired'} ${time(d.pin.keepUntil)}${d.pin.note === null ? '' : html` — ${d.pin.note}`}`}</td></tr>
</table>
<h2>Signatures (${trusted} of ${d.signatures.length} by keys this cache trusts)</h2>
<table>${d.signatures.map(s => html`<tr><th>${s.keyName}</th><td>${s.trusted
    ? html`<span class="ok">verified, trusted key</span>`
    : html`<span class="no">not a key this cache trusts</span> (kept and served as uploaded)`}<br><code>${s.text}</code></td></tr>`)}
</table>
<h2>Provenance</h2>
${provenanceTable(d.provenance, showAddress)}
<h2>References (${d.references.length})</h2>
${d.references.length === 0
    ? html`<p class="muted">none</p>`
    : html`<ul class="paths">${d.references.map(r => html`<li>${r.hashPart === d.hashPart
      ? html`${STORE_DIR}/${r.baseName} <span class="muted">(itself)</span>`
      : r.present ? pathLink(r.hashPart, `${STORE_DIR}/${r.baseName}`) : html`${STORE_DIR}/${r.baseName} <span class="no">(missing)</span>`}</li>`)}</ul>`}
<h2>Referrers (${d.referrers.length}${d.referrersTruncated ? '+' : ''})</h2>
${d.referrers.length === 0
    ? html`<p class="muted">nothing in this cache refers to it</p>`
    : html`<ul class="paths">${d.referrers.map(r => html`<li>${pathLink(r.hashPart, r.storePath)}</li>`)}</ul>`}`
}

export function pageRoutes (app: FastifyInstance): void {
  const { config, browse } = app.narwhal

  app.get('/', async (request, reply) => {
    const url = cacheUrl(request, config.listen)
    const o = await browse.overview(app.narwhal.upstreams)
    const keys = app.narwhal.trustedKeys.publicKeys()
    const host = new URL(url).hostname
    return send(reply, 200, `narwhal cache at ${url}`, html`<h1>Nix binary cache at ${url}</h1>
<p>This is a Nix binary cache, served by narwhal.
Every path here was checked when it was uploaded: its NAR hashes to what its narinfo says, the narinfo is signed by a key this cache trusts, and every path it references is here too.</p>
<h2>Use it</h2>
<p>Add to <code>nix.conf</code> (<code>/etc/nix/nix.conf</code>, or <code>~/.config/nix/nix.conf</code> for a trusted user):</p>
<pre id="nix-conf" class="wrap">extra-substituters = ${url}
extra-trusted-public-keys = ${keys.join(' ')}</pre>
${keys.length === 0 ? html`<p class="no">This cache trusts no uploader key yet, so it holds no paths.</p>` : ''}
${config.private
    ? html`<p>This cache is private: Nix needs a read token too, as the password of a netrc line (<code>netrc-file</code> in nix.conf):</p>
<pre>machine ${host} login narwhal password YOUR-READ-TOKEN</pre>`
    : ''}
<h2>Contents</h2>
<div class="figures">
<div><b id="paths">${o.paths.toLocaleString('en')}</b>store paths</div>
<div><b>${formatBytes(o.narBytes)}</b>of NAR files (${o.narFiles.toLocaleString('en')})</div>
<div><b>${o.pushesLastDay.toLocaleString('en')}</b>paths pushed in the last day</div>
<div><b>${o.narFilesFetchedLastDay.toLocaleString('en')}</b>NAR files downloaded in the last day</div>
</div>
${o.upstreams.length === 0
    ? ''
    : html`<h2>Upstreams</h2><table><tr><th>name</th><th>URL</th><th>state</th></tr>
${o.upstreams.map(u => html`<tr><td>${u.name}</td><td>${u.url}</td><td>${u.state}${u.detail === undefined ? '' : html` <span class="muted">${u.detail}</span>`}</td></tr>`)}</table>`}
<h2>Find a path</h2>
<form action="/search" method="get"><input type="search" name="q" placeholder="hash, /nix/store/… path or name" aria-label="Search store paths"> <button type="submit">Search</button></form>
<p class="muted">Figures as of ${time(o.at)}.</p>`)
  })

  app.get<{ Querystring: { q?: string } }>('/search', {
    schema: { querystring: { type: 'object', properties: { q: { type: 'string', maxLength: MAX_QUERY } } } }
  }, async (request, reply) => {
    const query = request.query.q ?? ''
    const hits = await browse.search(query)
    return send(reply, 200, `Search: ${query}`, html`<h1>Paths matching “${query}”</h1>
${hits.length === 0
    ? html`<p id="no-results">No store path in this cache matches.</p>`
    : html`<ul class="paths" id="results">${hits.map(h => html`<li>${pathLink(h.hashPart, h.storePath)} <span class="muted">${formatBytes(h.narSize)}</span></li>`)}</ul>`}`, query)
  })

  app.get<{ Params: { hash: string } }>('/path/:hash', {
    schema: { params: { type: 'object', properties: { hash: { type: 'string', pattern: `^${HASH_PART_PATTERN}$` } }, required: ['hash'] } }
  }, async (request, reply) => {
    const details = await browse.path(request.params.hash, app.narwhal.trustedKeys)
    if (details === undefined) {
      return send(reply, 404, 'Not in this cache', html`<h1>Not in this cache</h1><p>No store path with hash ${request.params.hash} is here.</p>`)
    }
    // A public page shows no client addresses; in private mode every reader holds a token.
    return send(reply, 200, details.storePath, pathPage(details, cacheUrl(request, config.listen), config.private))
  })
}
