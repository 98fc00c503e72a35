// docs/configuration.md, rendered from the code: every command's options as commander holds them,
// the manager's variables from MANAGER_ENV, the worker's from WORKER_CONFIG_FIELDS, the client
// commands' from their help text. tests/cli/configReference.test.ts fails when the file differs.

import type { Command, Option } from 'commander';
import { MANAGER_ENV } from '../manager/managerConfig.ts';
import { WORKER_CONFIG_FIELDS } from '../storagenode/workerConfig.ts';
import { fullProgram } from './program.ts';

/** Variables no flag stands for; each IMGVAULT_* name in src/ must be documented somewhere here. */
const PROCESS_ENV: [string, string][] = [
  [
    'IMGVAULT_CA',
    'what `--ca <file>` (an option of the `imgvault` program, given before or after the command) falls back to: a PEM CA bundle every command trusts, and only it, for https:// manager URLs',
  ],
  ['IMGVAULT_LOG_LEVEL', 'pino level of every process (default info; the drill passes its --log-level)'],
  [
    'IMGVAULT_CHILD_NODE_ARGS',
    'extra node arguments (space-separated) for every child process `cluster`, the drills and the benchmarks start, e.g. --cpu-prof',
  ],
  [
    'IMGVAULT_CHILDREN_FROM_BUILD',
    '1: a launcher run from the TypeScript source (a benchmark) starts its children from the build in dist/ all the same, as a deployment runs them (bench:scale sets it after building)',
  ],
];

const HEADER = `# Configuration reference

Every flag of every \`imgvault\` command, the environment variable it falls back to (a flag wins
over its variable) and its default. Generated from the code by \`npm run docs:config\`; a test fails
when this file differs from what the code says, so run that script after changing a flag, a
variable or a default. How to set up and run a cluster: [operations.md](operations.md).
`;

const cell = (text: string) => text.replaceAll('|', '\\|').replaceAll('\n', ' ');

/** The variables an option falls back to: from the config tables, else the ones its help names. */
function envOf(path: string, o: Option): string[] {
  if (path === 'manager') {
    const name: string | undefined = MANAGER_ENV[o.attributeName() as keyof typeof MANAGER_ENV];
    return name === undefined ? [] : [name];
  }
  if (path === 'worker') {
    const field = Object.values(WORKER_CONFIG_FIELDS).find((f) => f.flag === o.long);
    if (field !== undefined && o.long !== '--secret-file') return [field.env];
  }
  return [...new Set(o.description.match(/IMGVAULT_[A-Z0-9_]+/g) ?? [])];
}

/** commander's default, the worker's table, else the one the help states ("(default X)", "; default X]"). */
function defaultOf(path: string, o: Option): string {
  if (o.defaultValue !== undefined) return String(o.defaultValue);
  const field = Object.values(WORKER_CONFIG_FIELDS).find((f) => f.flag === o.long);
  if (path === 'worker' && field !== undefined) return field.defaultText;
  return o.description.match(/(?:\(|; )default:? ([^)\]]+)[)\]]/)?.[1] ?? '';
}

/** The help text without its trailing "[env ...]" note, which the other columns hold. */
const meaning = (o: Option) => o.description.replace(/ \[[^\]]*\]$/, '');

function section(path: string, cmd: Command): string {
  const options = cmd.options.filter((o) => o.long !== '--help');
  const rows = options.map((o) => {
    const env = envOf(path, o)
      .map((e) => `\`${e}\``)
      .join(', ');
    const dflt = defaultOf(path, o);
    return `| \`${cell(o.flags)}\` | ${env} | ${dflt === '' ? '' : `\`${cell(dflt)}\``} | ${cell(meaning(o))} |`;
  });
  return [
    `## imgvault ${path}`,
    '',
    cell(cmd.description()),
    '',
    '| Flag | Environment | Default | Meaning |',
    '| --- | --- | --- | --- |',
    ...rows,
    '',
  ].join('\n');
}

function sections(cmd: Command, prefix: string): string[] {
  return cmd.commands.flatMap((sub) => {
    const path = prefix === '' ? sub.name() : `${prefix} ${sub.name()}`;
    const own = sub.options.some((o) => o.long !== '--help') ? [section(path, sub)] : [];
    return [...own, ...sections(sub, path)];
  });
}

export async function renderConfigReference(): Promise<string> {
  const program = await fullProgram();
  const others = [
    '## Variables without a flag',
    '',
    '| Environment | Meaning |',
    '| --- | --- |',
    ...PROCESS_ENV.map(([name, what]) => `| \`${name}\` | ${cell(what)} |`),
    '',
  ].join('\n');
  return [HEADER, ...sections(program, ''), others].join('\n');
}
