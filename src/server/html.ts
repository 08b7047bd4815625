/**
 * HTML for the pages for people (routes/pages.ts): the one escaping helper and the page frame.
 *
 * Every value goes into markup through the `html` template tag, which escapes each interpolated
 * value with escapeHtml unless it is already markup made by `html` itself. So escaping is what
 * happens by default, and text from a narinfo or a client (a signature's key name, a search
 * query, a Host header) can never become markup. The pages carry no script at all, and the
 * Content-Security-Policy they are sent with forbids any.
 */

/** Markup that is safe to emit as is: only `html` makes it. */
export class SafeHtml {
  readonly #markup: string
  constructor (markup: string) { this.#markup = markup }
  toString (): string { return this.#markup }
}

type Value = SafeHtml | string | number | boolean | null | undefined | readonly Value[]

const ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }

/** Text as HTML text or attribute content (attributes are always double-quoted here). */
export function escapeHtml (text: string): string {
  return text.replace(/[&<>"']/g, c => ESCAPES[c] ?? c)
}

function render (value: Value): string {
  if (value instanceof SafeHtml) return value.toString()
  if (Array.isArray(value)) return value.map(render).join('')
  if (value === null || value === undefined || value === false) return ''
  return escapeHtml(String(value))
}

/** `html\`<p>${text}</p>\``: the literal parts as written, every value escaped (arrays joined). */
export function html (strings: TemplateStringsArray, ...values: Value[]): SafeHtml {
  let out = strings[0] ?? ''
  values.forEach((value, i) => { out += render(value) + (strings[i + 1] ?? '') })
  return new SafeHtml(out)
}

/** Response headers of every page: HTML, no script or outside resource, not framed, not cached by proxies. */
export const PAGE_HEADERS = {
  'content-type': 'text/html; charset=utf-8',
  'content-security-policy': "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'cache-control': 'private, no-cache'
} as const

const STYLE = `
body { font: 15px/1.5 system-ui, sans-serif; color: #1d2430; background: #f6f7f9; margin: 0; }
main { max-width: 60rem; margin: 0 auto; padding: 1.5rem 1.25rem 3rem; }
header { background: #17324d; color: #fff; }
header div { max-width: 60rem; margin: 0 auto; padding: .75rem 1.25rem; display: flex; gap: 1.5rem; align-items: center; flex-wrap: wrap; }
header a { color: #fff; text-decoration: none; font-weight: 600; }
header form { margin-left: auto; }
h1 { font-size: 1.5rem; margin: .5rem 0 1rem; overflow-wrap: anywhere; }
h2 { font-size: 1.1rem; margin: 2rem 0 .5rem; }
a { color: #1b5fa8; }
code, pre { font: 13px/1.45 ui-monospace, monospace; }
pre { background: #fff; border: 1px solid #d5dae1; border-radius: 6px; padding: .75rem 1rem; overflow-x: auto; user-select: all; }
table { border-collapse: collapse; width: 100%; background: #fff; border: 1px solid #d5dae1; }
th, td { text-align: left; padding: .35rem .75rem; border-bottom: 1px solid #e6e9ee; vertical-align: top; }
th { width: 12rem; font-weight: 600; color: #4a5565; }
td { overflow-wrap: anywhere; }
pre.wrap { white-space: pre-wrap; overflow-wrap: anywhere; }
.figures { display: grid; grid-template-columns: repeat(auto-fit, minmax(10rem, 1fr)); gap: .75rem; }
.figures div { background: #fff; border: 1px solid #d5dae1; border-radius: 6px; padding: .6rem .9rem; }
.figures b { display: block; font-size: 1.4rem; }
.ok { color: #11703a; font-weight: 600; }
.no { color: #8a5300; }
.muted { color: #5f6b7a; }
input[type=search] { font: inherit; padding: .3rem .5rem; width: 18rem; max-width: 60vw; border: 1px solid #9aa5b4; border-radius: 4px; }
button { font: inherit; padding: .3rem .8rem; }
ul.paths { padding-left: 1.2rem; }
ul.paths li { overflow-wrap: anywhere; }
`

/** A whole page: the header with the search box, then `body`. */
export function page (title: string, body: SafeHtml, query = ''): string {
  return '<!doctype html>\n' + html`<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${title}</title>
<style>${new SafeHtml(STYLE)}</style>
</head>
<body>
<header><div><a href="/">narwhal</a><form action="/search" method="get" role="search">
<input type="search" name="q" value="${query}" placeholder="store path hash or name" aria-label="Search store paths">
<button type="submit">Search</button></form></div></header>
<main>
${body}
</main>
</body>
</html>
`.toString()
}
