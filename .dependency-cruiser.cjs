/**
 * The import direction of src/ (docs/architecture.md, "Layers"):
 *
 *   cli -> manager | storagenode -> metadata -> consensus, and every layer may use protocol/, http/
 *   and the files at the top of src/, which use none of them. Nothing imports cli; manager and
 *   storagenode talk over the wire.
 *
 * `npm run lint:layers` checks it, and `npm test` runs that. tests/layers.test.ts proves each rule
 * fails on a violation.
 */
const LAYERS = '(consensus|metadata|manager|storagenode|cli)';

module.exports = {
  forbidden: [
    {
      name: 'nothing-imports-cli',
      comment: 'The CLI is the top: it composes the processes, nothing composes it.',
      severity: 'error',
      from: { path: '^src/', pathNot: '^src/cli/' },
      to: { path: '^src/cli/' },
    },
    {
      name: 'manager-and-worker-meet-on-the-wire',
      comment: 'Manager and storage worker share only what protocol/ defines.',
      severity: 'error',
      from: { path: '^src/(manager|storagenode)/' },
      to: { path: '^src/(manager|storagenode)/', pathNot: '^src/$1/' },
    },
    {
      name: 'metadata-is-below-the-processes',
      severity: 'error',
      from: { path: '^src/metadata/' },
      to: { path: '^src/(manager|storagenode|cli)/' },
    },
    {
      name: 'consensus-is-the-bottom-layer',
      severity: 'error',
      from: { path: '^src/consensus/' },
      to: { path: '^src/(metadata|manager|storagenode|cli)/' },
    },
    {
      name: 'kit-and-wire-import-no-layer',
      comment:
        'http/, protocol/ and the files at the top of src/ (logging, file writes) serve every layer, so they use none.',
      severity: 'error',
      from: { path: ['^src/(http|protocol)/', '^src/[^/]+$'] },
      to: { path: `^src/${LAYERS}/` },
    },
    {
      name: 'no-cycles',
      comment: 'A type two modules share lives in a module below both, never in one of them.',
      severity: 'error',
      from: { path: '^src/' },
      to: { circular: true },
    },
  ],
  options: {
    includeOnly: '^src/',
    // Type-only imports count: a layer that needs another's types depends on it all the same.
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
  },
};
