/** unbzip2-stream returns a classic `through` stream; narwhal wraps it in a Transform. */
declare module 'unbzip2-stream' {
  import type { Duplex } from 'node:stream'
  function bz2 (): Duplex
  export default bz2
}
