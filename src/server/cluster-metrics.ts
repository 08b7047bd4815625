/**
 * /metrics for `narwhal serve --workers N`. A scrape lands on one worker but must describe the
 * whole server, so that worker asks the primary over the cluster's IPC channel, and the primary
 * has prom-client's AggregatorRegistry gather every worker's registry and merge them:
 *
 *   worker W: GET /metrics  ──{ type: 'narwhal:metrics-request', id }──▶  primary
 *   primary: clusterMetrics() ──prom-client's own request──▶ every worker ──its registry as JSON──▶ primary
 *   primary  ──{ type: 'narwhal:metrics-response', id, text | error }──▶  W answers the scrape
 *
 * Merging sums a metric over the workers unless the metric names another `aggregator` (the gc
 * metrics in metrics.ts, which every worker reads from the same database, take the max).
 *
 * A worker's counters start from zero when it is restarted, so the server-wide sums can go down
 * then; Prometheus reads any decrease of a counter as a reset, which is what it was.
 */
import cluster, { type Worker } from 'node:cluster'
import { AggregatorRegistry, type PrometheusContentType, type Registry } from 'prom-client'
import { NarwhalError } from '../errors.js'

const REQUEST = 'narwhal:metrics-request'
const RESPONSE = 'narwhal:metrics-response'

/** Longer than prom-client's own 5 s limit for the workers' answers, so its error comes first. */
const ANSWER_TIMEOUT_MS = 10_000

interface MetricsRequest { type: typeof REQUEST, id: number }
interface MetricsResponse { type: typeof RESPONSE, id: number, text?: string, error?: string }

function isMessage<T extends { type: string }> (message: unknown, type: T['type']): message is T {
  return typeof message === 'object' && message !== null && (message as { type?: unknown }).type === type
}

let joined: AggregatorRegistry<PrometheusContentType> | undefined

/**
 * Worker: answer the primary's requests for this process's metrics from now on. Call first thing
 * in a worker: until `shareRegistry` the answer is empty, and a worker that did not answer at
 * all would make every scrape wait for prom-client's 5 s timeout and fail.
 */
export function joinClusterMetrics (): void {
  // Constructing one installs prom-client's listener for the primary's requests (once per process).
  joined ??= new AggregatorRegistry()
  AggregatorRegistry.setRegistries([])
}

/** Worker: the registry whose metrics this process contributes to the server-wide answer. */
export function shareRegistry (registry: Registry): void {
  AggregatorRegistry.setRegistries([registry])
}

let nextId = 0
/** Scrapes of this worker waiting for the primary, by request id. */
const waiting = new Map<number, (err: Error | undefined, text?: string) => void>()

function onResponse (message: unknown): void {
  if (!isMessage<MetricsResponse>(message, RESPONSE)) return
  const finish = waiting.get(message.id)
  if (finish === undefined) return
  if (message.text !== undefined) finish(undefined, message.text)
  else finish(new NarwhalError('NARWHAL_INTERNAL', `the workers' metrics could not be gathered: ${message.error ?? 'no answer'}`))
}

/** Worker: the metrics of all workers, merged by the primary, in Prometheus' text format. */
export async function metricsFromPrimary (): Promise<string> {
  const send = process.send?.bind(process)
  if (send === undefined || !process.connected) throw new NarwhalError('NARWHAL_INTERNAL', 'the primary process is gone')
  if (!process.listeners('message').includes(onResponse)) process.on('message', onResponse)
  const id = nextId++
  return await new Promise<string>((resolve, reject) => {
    const finish = (err: Error | undefined, text?: string): void => {
      clearTimeout(timer)
      waiting.delete(id)
      if (err !== undefined) reject(err)
      else resolve(text ?? '')
    }
    const timer = setTimeout(() => { finish(new NarwhalError('NARWHAL_INTERNAL', 'the primary did not answer a metrics request')) }, ANSWER_TIMEOUT_MS)
    waiting.set(id, finish)
    const request: MetricsRequest = { type: REQUEST, id }
    send(request, undefined, {}, (err: Error | null) => { if (err !== null) finish(err) })
  })
}

/** Primary: answer the workers' requests for the server-wide metrics; returns the function that stops. */
export function serveClusterMetrics (): () => void {
  const aggregator = new AggregatorRegistry()
  const onMessage = (worker: Worker, message: unknown): void => {
    if (!isMessage<MetricsRequest>(message, REQUEST)) return
    const reply = (response: MetricsResponse): void => {
      // A worker that died meanwhile has no one left to answer.
      if (worker.isConnected()) worker.send(response)
    }
    aggregator.clusterMetrics().then(
      text => { reply({ type: RESPONSE, id: message.id, text }) },
      (err: unknown) => { reply({ type: RESPONSE, id: message.id, error: err instanceof Error ? err.message : String(err) }) })
  }
  cluster.on('message', onMessage)
  return () => { cluster.off('message', onMessage) }
}
