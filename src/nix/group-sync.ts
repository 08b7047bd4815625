/**
 * Group commit for fsync: callers that need the same file (a directory, SQLite's write-ahead log)
 * on the disk while a sync of it is under way share the next sync, so uploads that finish at
 * about the same time cost one fsync instead of one each, and the event loop never waits for the
 * disk (the sync runs on the thread pool). A caller is answered only by a sync that began after
 * it asked, so whatever it wrote before asking is on the disk when its promise resolves. A failed
 * sync fails everyone who waited on it. Here, the lowest layer, because storage/ (directories) and
 * db/ (the log) both use it.
 */

/** One sync of a file: under way (`done`), and the one queued behind it, if anyone asked meanwhile. */
interface Round { done: Promise<void>, queued: Promise<void> | undefined }

export class GroupSync {
  readonly #syncFile: (file: string) => Promise<void>
  readonly #rounds = new Map<string, Round>()

  /** `syncFile(file)` makes what was written to `file` durable (an fsync of it). */
  constructor (syncFile: (file: string) => Promise<void>) {
    this.#syncFile = syncFile
  }

  /** Resolves once a sync of `file` that began after this call has finished. */
  async sync (file: string): Promise<void> {
    const round = this.#rounds.get(file)
    if (round === undefined) return await this.#begin(file)
    // The sync under way may have begun before the caller's writes: it waits for the next one.
    const begin = async (): Promise<void> => await this.#begin(file)
    round.queued ??= round.done.then(begin, begin)
    return await round.queued
  }

  #begin (file: string): Promise<void> {
    const round: Round = { done: Promise.resolve(), queued: undefined }
    round.done = this.#syncFile(file).finally(() => {
      // With a round queued, that round takes this one's place when it begins.
      if (round.queued === undefined) this.#rounds.delete(file)
    })
    this.#rounds.set(file, round)
    return round.done
  }
}
