/**
 * An object of an S3 bucket opened for reading, as the BlobBody of storage/blob-store.ts: the
 * GetObject response's stream, sent once by read, send or chunks, or released by close (it
 * holds one of the client's connections until then).
 */
import type { Readable, Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import type { BlobBody } from './blob-store.js'
import type { ObjectRead } from './s3-objects.js'

export class S3Body implements BlobBody {
  readonly kind = 'body'
  readonly size: number
  readonly length: number
  #stream: Readable | undefined

  constructor (read: ObjectRead) {
    this.size = read.size
    this.length = read.end - read.start + 1
    this.#stream = read.body
  }

  async read (): Promise<Buffer> {
    const parts: Buffer[] = []
    for await (const chunk of this.#take()) parts.push(chunk as Buffer)
    return Buffer.concat(parts)
  }

  async send (sink: Writable): Promise<Error | undefined> {
    try {
      // Either side failing destroys the other: a read cut short ends the response short.
      await pipeline(this.#take(), sink)
      return undefined
    } catch (err) {
      return err instanceof Error ? err : new Error(String(err))
    }
  }

  chunks (): AsyncIterable<Buffer> {
    return this.#take()
  }

  close (): void {
    this.#stream?.destroy()
    this.#stream = undefined
  }

  #take (): Readable {
    const stream = this.#stream
    if (stream === undefined) throw new Error('the body of this S3 object was already taken or closed')
    this.#stream = undefined
    return stream
  }
}
