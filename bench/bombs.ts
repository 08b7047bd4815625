/**
 * `node dist/bench/bombs.js`: what a decompression bomb costs the server. For xz, bzip2 and
 * zstd, a NAR of BENCH_BOMB_GIB (default 1) GiB of zeros is compressed by the system's own tool
 * (a few hundred bytes to a few hundred KB), uploaded to a fresh `narwhal serve`, and the table
 * gives the upload's size, the answer and its time, the server's peak RSS, and the slowest answer
 * to the GET /nix-cache-info requests made every 100 ms meanwhile (how long other clients wait).
 * Prints a table; never asserts.
 */
import { spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import os from 'node:os'
import { encodeNix32 } from '../src/nix/nix32.js'
import { bigNarStream } from './big-nar.js'
import { startNarwhal } from './servers.js'
import { peakRssMiB, useScratchTmpdir } from './tools.js'

const GIB = Number(process.env.BENCH_BOMB_GIB ?? 1)

const TOOLS = [
  { method: 'xz', extension: '.xz', command: ['xz', '-6', '-T1', '-c'] },
  { method: 'bzip2', extension: '.bz2', command: ['bzip2', '-9', '-c'] },
  { method: 'zstd', extension: '.zst', command: ['zstd', '-19', '-q', '-c'] }
] as const

/** A NAR of `size` zeros, compressed by `command` (read from its stdin, written to its stdout). */
async function compressedZeros (size: number, command: readonly string[]): Promise<Buffer> {
  const [file, ...args] = command
  const child = spawn(file ?? 'false', args, { stdio: ['pipe', 'pipe', 'inherit'] })
  const chunks: Buffer[] = []
  child.stdout.on('data', (chunk: Buffer) => chunks.push(chunk))
  const exited = new Promise<void>((resolve, reject) => {
    child.on('error', reject)
    child.on('close', (code) => { if (code === 0) resolve(); else reject(new Error(`${command.join(' ')} exited ${code}`)) })
  })
  bigNarStream(size, 0).pipe(child.stdin)
  await exited
  return Buffer.concat(chunks)
}

async function main (): Promise<void> {
  useScratchTmpdir('narwhal-bench-bombs')
  const rows: string[] = []
  for (const tool of TOOLS) {
    const body = await compressedZeros(GIB * 1024 ** 3, tool.command)
    const fileHash = encodeNix32(createHash('sha256').update(body).digest())
    const server = await startNarwhal(process.env)
    try {
      let slowest = 0
      const probing = { on: true }
      const probes = (async () => {
        while (probing.on) {
          const start = performance.now()
          await (await fetch(`${server.url}/nix-cache-info`)).text()
          slowest = Math.max(slowest, performance.now() - start)
          await new Promise(resolve => setTimeout(resolve, 100))
        }
      })()
      const start = performance.now()
      const answer = await fetch(`${server.url}/nar/${fileHash}.nar${tool.extension}`, {
        method: 'PUT', body, headers: { authorization: `Bearer ${server.token}` }
      })
      const seconds = (performance.now() - start) / 1000
      const text = (await answer.text()).trim()
      probing.on = false
      await probes
      rows.push(`| ${tool.method} | ${GIB} GiB | ${body.length.toLocaleString('en-US')} | ${answer.status} ${text.slice(0, 60)} | ` +
        `${seconds.toFixed(1)} | ${peakRssMiB(server.child.pid ?? 0).toFixed(0)} | ${slowest.toFixed(0)} |`)
    } finally {
      server.child.kill('SIGTERM')
    }
  }
  console.log(`\n${os.cpus().length} cores (${os.cpus()[0]?.model.trim() ?? 'unknown'}), Node ${process.version}, ${new Date().toISOString()}; ` +
    'default limits (limits.narSizeBytes 256 GiB)\n')
  console.log('| method | NAR of zeros | upload (bytes) | answer | seconds | server peak RSS (MiB) | slowest other request (ms) |')
  console.log('| --- | --- | ---: | --- | ---: | ---: | ---: |')
  for (const row of rows) console.log(row)
}

main().catch((err: unknown) => {
  console.error(err)
  process.exitCode = 1
})
