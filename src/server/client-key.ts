/**
 * Who a request is counted as by the rate limit (server/rate-limit.ts): its token when it
 * presents a valid one, else its address. Pure: no I/O, no Fastify.
 *
 * An IPv6 address counts by its /64 prefix: a machine, a home or a VM is routinely given a whole
 * /64, so counting single IPv6 addresses would hand one client 2^64 budgets. An IPv4 address
 * mapped into IPv6 (`::ffff:192.0.2.1`, how a dual-stack socket reports an IPv4 peer) counts as
 * that IPv4 address.
 */
import { isIPv4, isIPv6 } from 'node:net'

export function tokenKey (tokenId: number): string {
  return `token:${tokenId}`
}

/** The eight 16-bit groups of a valid IPv6 address (zone id removed). */
function ipv6Groups (address: string): number[] {
  let text = address
  const dotted = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text)
  if (dotted !== null) {
    const [a, b, c, d] = dotted.slice(1).map(Number) as [number, number, number, number]
    text = text.slice(0, dotted.index) + ((a << 8) | b).toString(16) + ':' + ((c << 8) | d).toString(16)
  }
  const parse = (part: string): number[] => part === '' ? [] : part.split(':').map(g => parseInt(g, 16))
  const [head = '', tail] = text.split('::')
  const first = parse(head)
  if (tail === undefined) return first
  const last = parse(tail)
  return [...first, ...new Array<number>(8 - first.length - last.length).fill(0), ...last]
}

/** The rate-limit key of a client address as Fastify reports it (request.ip). */
export function addressKey (ip: string): string {
  const address = ip.replace(/%.*$/, '')
  if (isIPv4(address)) return `ip:${address}`
  if (!isIPv6(address)) return `ip:${address}`
  const groups = ipv6Groups(address)
  const isMappedIPv4 = groups.slice(0, 5).every(g => g === 0) && groups[5] === 0xffff
  if (isMappedIPv4) {
    const high = groups[6] ?? 0
    const low = groups[7] ?? 0
    return `ip:${high >> 8}.${high & 0xff}.${low >> 8}.${low & 0xff}`
  }
  return `ip:${groups.slice(0, 4).map(g => g.toString(16)).join(':')}::/64`
}
