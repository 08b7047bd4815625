import neostandard from 'neostandard'

export default [
  ...neostandard({ ts: true, ignores: ['dist/**', 'node_modules/**', 'data/**'] }),
  {
    rules: {
      'n/prefer-node-protocol': 'error',
      // Only the CLI decides the exit status (src/cli/main.ts sets process.exitCode).
      'n/no-process-exit': 'error'
    }
  }
]
