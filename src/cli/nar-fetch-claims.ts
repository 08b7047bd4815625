/**
 * The turns to fetch upstream NARs across the processes of `narwhal serve --workers N`
 * (upstream/fetch-claims.ts), kept by the primary:
 *
 *   worker: { type: CLAIM, id, fileHash } ──▶ primary
 *   primary: nobody holds it → { type: TURN, id, outcome: 'mine' } at once; the worker fetches and
 *            sends { type: RELEASE, fileHash, outcome } once its fetch settled (stored or failed, or
 *            'abandoned' when another replica had the turn: the waiters look again)
 *   primary: another worker holds it → { type: TURN, id, outcome } once that one releases it, or
 *            'abandoned' when it died first (the waiter then claims again)
 *
 * So 16 clients asking two workers at once for a NAR cause one upstream GET: the first worker's;
 * the other's clients are served the stored NAR when it is done.
 */
import cluster, { type Worker } from 'node:cluster'
import type { FetchClaims, FetchSettled, FetchTurn } from '../upstream/fetch-claims.js'

const CLAIM = 'narwhal:nar-fetch-claim'
const TURN = 'narwhal:nar-fetch-turn'
const RELEASE = 'narwhal:nar-fetch-release'

interface ClaimMessage { type: typeof CLAIM, id: number, fileHash: string }
interface TurnMessage { type: typeof TURN, id: number, outcome: 'mine' | FetchSettled }
interface ReleaseMessage { type: typeof RELEASE, fileHash: string, outcome: FetchSettled }

function isMessage<T extends { type: string }> (message: unknown, type: T['type']): message is T {
  return typeof message === 'object' && message !== null && (message as { type?: unknown }).type === type
}

/** Primary: keeps the turns; returns the function that stops. */
export function serveNarFetchClaims (): () => void {
  /** By file hash: the worker fetching it, and the claims waiting for its outcome. */
  const held = new Map<string, { holder: Worker, waiting: Array<{ worker: Worker, id: number }> }>()
  const answer = (worker: Worker, id: number, outcome: TurnMessage['outcome']): void => {
    const message: TurnMessage = { type: TURN, id, outcome }
    if (worker.isConnected()) worker.send(message)
  }
  const settle = (fileHash: string, outcome: FetchSettled): void => {
    const entry = held.get(fileHash)
    held.delete(fileHash)
    for (const { worker, id } of entry?.waiting ?? []) answer(worker, id, outcome)
  }
  const onMessage = (worker: Worker, message: unknown): void => {
    if (isMessage<ClaimMessage>(message, CLAIM)) {
      const entry = held.get(message.fileHash)
      if (entry === undefined) {
        held.set(message.fileHash, { holder: worker, waiting: [] })
        answer(worker, message.id, 'mine')
      } else {
        entry.waiting.push({ worker, id: message.id })
      }
    } else if (isMessage<ReleaseMessage>(message, RELEASE)) {
      if (held.get(message.fileHash)?.holder === worker) settle(message.fileHash, message.outcome)
    }
  }
  // A worker that died holding turns will never release them: its waiters claim again.
  const onExit = (worker: Worker): void => {
    for (const [fileHash, entry] of held) {
      entry.waiting = entry.waiting.filter(w => w.worker !== worker)
      if (entry.holder === worker) settle(fileHash, 'abandoned')
    }
  }
  cluster.on('message', onMessage)
  cluster.on('exit', onExit)
  return () => {
    cluster.off('message', onMessage)
    cluster.off('exit', onExit)
  }
}

/** Worker: asks the primary for turns. */
export function narFetchClaimsFromPrimary (): FetchClaims {
  let nextId = 0
  const waiting = new Map<number, (outcome: TurnMessage['outcome']) => void>()
  process.on('message', (message: unknown) => {
    if (!isMessage<TurnMessage>(message, TURN)) return
    waiting.get(message.id)?.(message.outcome)
    waiting.delete(message.id)
  })
  // The primary gone, nobody answers: the waiters fetch themselves rather than hang.
  process.once('disconnect', () => {
    for (const finish of waiting.values()) finish('abandoned')
    waiting.clear()
  })
  const send = (message: ClaimMessage | ReleaseMessage): boolean => {
    if (!process.connected || process.send === undefined) return false
    process.send(message)
    return true
  }
  return {
    claim: async (fileHash: string): Promise<FetchTurn> => {
      const id = nextId++
      const outcome = await new Promise<TurnMessage['outcome']>(resolve => {
        waiting.set(id, resolve)
        if (!send({ type: CLAIM, id, fileHash })) {
          waiting.delete(id)
          resolve('mine')
        }
      })
      if (outcome !== 'mine') return { kind: 'settled', outcome }
      return { kind: 'mine', release: (result) => { send({ type: RELEASE, fileHash, outcome: result }) } }
    }
  }
}
