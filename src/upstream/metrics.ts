/**
 * The per-upstream counters of /metrics, labelled by the upstream's URL. Made here and added to
 * the server's registry when it builds /metrics (PullThrough.registerMetrics).
 */
import { Counter, type Registry } from 'prom-client'

export type RefusalReason = 'narinfo_signature' | 'narinfo_invalid' | 'nar_mismatch'

export class UpstreamMetrics {
  readonly hits = new Counter({
    name: 'narwhal_upstream_narinfo_hits_total',
    help: 'Narinfos an upstream had and narwhal verified and stored, by upstream',
    labelNames: ['upstream'] as const,
    registers: []
  })

  readonly misses = new Counter({
    name: 'narwhal_upstream_narinfo_misses_total',
    help: 'Narinfo lookups an upstream answered with not found, by upstream',
    labelNames: ['upstream'] as const,
    registers: []
  })

  readonly nars = new Counter({
    name: 'narwhal_upstream_nar_fetches_total',
    help: 'NAR files fetched from an upstream, verified and stored, by upstream',
    labelNames: ['upstream'] as const,
    registers: []
  })

  readonly bytes = new Counter({
    name: 'narwhal_upstream_received_bytes_total',
    help: 'NAR file bytes received from an upstream (verified or not), by upstream',
    labelNames: ['upstream'] as const,
    registers: []
  })

  readonly refusals = new Counter({
    name: 'narwhal_upstream_refusals_total',
    help: 'What an upstream sent and narwhal refused to pass on (unsigned narinfo, NAR that did not verify), by upstream and reason',
    labelNames: ['upstream', 'reason'] as const,
    registers: []
  })

  readonly errors = new Counter({
    name: 'narwhal_upstream_errors_total',
    help: 'Upstream requests that failed (connection, timeout, unexpected status), by upstream',
    labelNames: ['upstream'] as const,
    registers: []
  })

  register (registry: Registry): void {
    for (const metric of [this.hits, this.misses, this.nars, this.bytes, this.refusals, this.errors]) registry.registerMetric(metric)
  }
}
