/**
 * The progress bar `narwhal push` draws on a terminal (stderr), redrawn at most every 100 ms:
 *
 *   [##########··········]  12/40 paths   34.5 MiB/120.0 MiB
 *
 * Not a terminal (CI logs, pipes): nothing is drawn, only the final summary line is printed.
 */
import type { PushProgress } from './push-closure.js'
import { formatBytes } from './service.js'

export function renderBar (p: PushProgress, width = 20): string {
  const fraction = p.bytesTotal > 0 ? p.bytesDone / p.bytesTotal : p.pathsTotal > 0 ? p.pathsDone / p.pathsTotal : 1
  const filled = Math.max(0, Math.min(width, Math.round(fraction * width)))
  return `[${'#'.repeat(filled)}${'·'.repeat(width - filled)}] ${String(p.pathsDone).padStart(4)}/${p.pathsTotal} paths ` +
    `${formatBytes(p.bytesDone)}/${formatBytes(p.bytesTotal)}`
}

export class ProgressBar {
  private readonly stream: NodeJS.WriteStream
  private last = 0
  private drawn = false

  constructor (stream: NodeJS.WriteStream = process.stderr) {
    this.stream = stream
  }

  get enabled (): boolean {
    return this.stream.isTTY
  }

  update (p: PushProgress, force = false): void {
    if (!this.enabled) return
    const now = Date.now()
    if (!force && now - this.last < 100) return
    this.last = now
    this.stream.write(`\r\x1b[2K${renderBar(p)}`)
    this.drawn = true
  }

  /** Clears the bar so the next line starts clean. */
  done (): void {
    if (this.enabled && this.drawn) this.stream.write('\r\x1b[2K')
    this.drawn = false
  }
}
