/**
 * The pages for people, in a real browser (chromium through playwright-core) against a real server
 * filled by the real `nix copy`: the front page's nix.conf lines are the server's own, search finds
 * a pushed path, its page links its references and referrers, text from uploads and visitors is
 * shown as text, and a private cache shows a visitor without a read token nothing.
 *
 * NARWHAL_SCREENSHOTS=DIR saves the front page and a path page there (the README's pictures).
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import path from 'node:path'
import { generateKeyPair } from '../../src/signing/keys.js'
import { openBrowser } from '../helpers/browser.js'
import { buildClosure, netrcFile, nixKeyPair, nixOk } from '../helpers/nix.js'
import { startServer } from '../helpers/server.js'
import { freshNar, narinfoFor, put } from '../helpers/upload.js'
import { formatNarInfo } from '../../src/nix/narinfo.js'

const SCREENSHOTS = process.env.NARWHAL_SCREENSHOTS

test('front page, search and path pages of a cache filled by nix copy', async (t) => {
  const key = await nixKeyPair('ci-builder-1')
  const other = generateKeyPair('release-signer-1')
  const server = await startServer(t, { trustedKeys: [key.publicKey, other.publicKeyText] })
  const closure = await buildClosure()
  await nixOk(['copy', '--to', `${server.url}?secret-key=${key.secretFile}`, closure.top],
    { config: [`netrc-file = ${netrcFile((await server.token('push')))}`] })
  const browser = await openBrowser(t)
  const page = await browser.newPage()

  // The front page: the nix.conf lines carry the URL the browser used and every trusted key.
  const front = await page.goto(server.url + '/')
  assert.equal(front?.status(), 200)
  assert.equal(await page.textContent('#nix-conf'),
    `extra-substituters = ${server.url}\nextra-trusted-public-keys = ${key.publicKey} ${other.publicKeyText}`)
  assert.equal(await page.textContent('#paths'), '3')
  await page.goto(`http://localhost:${server.port}/`)
  assert.match(await page.textContent('#nix-conf') ?? '', new RegExp(`^extra-substituters = http://localhost:${server.port}\n`))
  if (SCREENSHOTS !== undefined) await page.screenshot({ path: path.join(SCREENSHOTS, 'page-front.png'), fullPage: true })

  // Search by name from the header's box, then follow the hit.
  const topName = path.basename(closure.top).slice(33)
  await page.fill('header input[name=q]', topName)
  await Promise.all([page.waitForURL(/\/search\?q=/), page.press('header input[name=q]', 'Enter')])
  const hits = await page.$$eval('#results a', links => links.map(a => a.textContent))
  assert.deepEqual(hits, [closure.top])
  // By hash prefix too.
  await page.goto(`${server.url}/search?q=${path.basename(closure.dep).slice(0, 6)}`)
  assert.ok((await page.$$eval('#results a', links => links.map(a => a.textContent))).includes(closure.dep))

  await page.goto(`${server.url}/search?q=${encodeURIComponent(topName)}`)
  await Promise.all([page.waitForURL(/\/path\//), page.click('#results a')])
  assert.equal(await page.textContent('h1'), topName)
  const refs = await page.$$eval('ul.paths a', links => links.map(a => a.textContent))
  assert.ok(refs.includes(closure.dep), `references list ${closure.dep}: ${refs.join(', ')}`)
  const body = await page.textContent('main') ?? ''
  assert.match(body, /Signatures \(1 of 1 by keys this cache trusts\)/)
  assert.match(body, /ci-builder-1\s*verified, trusted key/)
  assert.match(body, new RegExp(`nix copy --from ${server.url} ${closure.top}`))
  assert.match(body, /created\s*test-push \(id 1\)\s*ci-builder-1/)
  if (SCREENSHOTS !== undefined) await page.screenshot({ path: path.join(SCREENSHOTS, 'page-path.png'), fullPage: true })

  // The dependency's page lists the top path among its referrers.
  await Promise.all([page.waitForURL(/\/path\//), page.click(`ul.paths a:text("${closure.dep}")`)])
  assert.ok((await page.$$eval('ul.paths a', links => links.map(a => a.textContent))).includes(closure.top))
  assert.equal((await page.goto(`${server.url}/path/${'0'.repeat(32)}`))?.status(), 404)
  await browser.close()
})

test('text from uploads and visitors renders as text, never as markup', async (t) => {
  const uploader = generateKeyPair('test-uploader-1')
  const server = await startServer(t, { trustedKeys: [uploader.publicKeyText] })
  const token = await server.token('push')
  // Store path names allow no < > & " ', but + ? = are allowed and a signature's key name is any text.
  const nar = await freshNar('xz', { name: 'what?a=b+c' })
  assert.equal((await put(`${server.url}/${nar.url}`, nar.bytes, token)).status, 201)
  const evil = '<img src=x onerror="document.title=\'pwned\'"><script>document.title=\'pwned\'</script>'
  const info = narinfoFor(nar, { keys: [uploader.secretKey] })
  info.sigs.push(`${evil}:${Buffer.alloc(64, 7).toString('base64')}`)
  const answer = await put(`${server.url}/${nar.hashPart}.narinfo`, formatNarInfo(info), token)
  assert.equal(answer.status, 201, answer.body)

  const browser = await openBrowser(t)
  const page = await browser.newPage()
  await page.goto(`${server.url}/search?q=${encodeURIComponent('what?a=b+c')}`)
  assert.deepEqual(await page.$$eval('#results a', links => links.map(a => a.textContent)), [nar.storePath])
  await Promise.all([page.waitForURL(/\/path\//), page.click('#results a')])
  assert.equal(await page.textContent('h1'), nar.storePath.slice(44))
  const main = await page.textContent('main') ?? ''
  assert.ok(main.includes(evil), 'the key name is shown as written')
  assert.match(main, /Signatures \(1 of 2 by keys this cache trusts\)/)
  assert.equal(await page.$$eval('main img, main script', found => found.length), 0)
  assert.notEqual(await page.title(), 'pwned')
  // A store path with a ? in it is one shell word only when quoted.
  assert.ok(main.includes(`nix-store -r '${nar.storePath}'`))

  const query = '<b id="injected">bold</b>'
  await page.goto(`${server.url}/search?q=${encodeURIComponent(query)}`)
  assert.equal(await page.$$eval('#injected', found => found.length), 0)
  assert.equal(await page.textContent('h1'), `Paths matching “${query}”`)
  assert.equal(await page.inputValue('header input[name=q]'), query)
  await browser.close()
})

test('a private cache shows a visitor without a read token nothing, and one with it everything', async (t) => {
  const key = await nixKeyPair('ci-builder-1')
  const server = await startServer(t, { private: true, trustedKeys: [key.publicKey] })
  const closure = await buildClosure()
  await nixOk(['copy', '--to', `${server.url}?secret-key=${key.secretFile}`, closure.top],
    { config: [`netrc-file = ${netrcFile((await server.token('push')))}`] })
  const hash = path.basename(closure.top).slice(0, 32)
  const topName = path.basename(closure.top).slice(33)

  // A browser without a token is asked for credentials (playwright, having none to give, fails
  // the navigation); what the 401 carries, which a person sees after cancelling, reveals nothing.
  const strangerBrowser = await openBrowser(t)
  const stranger = await strangerBrowser.newPage()
  for (const url of ['/', `/path/${hash}`, `/search?q=${topName}`, '/search?q=narwhal']) {
    await assert.rejects(stranger.goto(server.url + url), /ERR_INVALID_AUTH_CREDENTIALS/, url)
    const response = await fetch(server.url + url)
    assert.equal(response.status, 401, url)
    assert.equal(response.headers.get('www-authenticate'), 'Basic realm="narwhal"')
    const text = await response.text()
    assert.match(text, /^NARWHAL_UNAUTHORIZED: /)
    for (const secret of [key.publicKey.split(':')[1] ?? '', topName, hash, 'extra-substituters']) {
      assert.ok(!text.includes(secret), `${url} reveals ${secret}`)
    }
  }
  await strangerBrowser.close()

  const readerBrowser = await openBrowser(t, { username: 'narwhal', password: (await server.token('read')) })
  const reader = await readerBrowser.newPage()
  assert.equal((await reader.goto(server.url + '/'))?.status(), 200)
  assert.match(await reader.textContent('#nix-conf') ?? '', new RegExp(`extra-trusted-public-keys = ${key.publicKey.replace(/[+/]/g, '\\$&')}$`))
  assert.match(await reader.textContent('main') ?? '', /machine 127\.0\.0\.1 login narwhal password YOUR-READ-TOKEN/)
  assert.equal((await reader.goto(`${server.url}/path/${hash}`))?.status(), 200)
  // In private mode every reader holds a token, so the page shows where pushes came from.
  assert.match(await reader.textContent('main') ?? '', /created\s*test-push \(id 1\)\s*ci-builder-1\s*127\.0\.0\.1/)
  // Closed before the server, which would otherwise wait for the browser's keep-alive connections.
  await readerBrowser.close()
})
