// `imgvault credentials`: the per-role credentials of a cluster of hosts (docs/security.md). `init`
// writes every folder, `worker` mints one more worker's from the manager keys. Files 0600 in 0700
// folders; an existing file is never overwritten, so a re-run adds what is missing and nothing else.

import { access } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { Command } from 'commander';
import {
  ensureManagerKeys,
  MANAGER_KEY_FILES,
  managerDir,
  readManagerKeys,
  writeOperatorCredential,
  writeWorkerCredentials,
} from '../http/credentialFiles.ts';

const ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

function ids(list: string | undefined, what: string): string[] {
  const out = (list ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  const bad = out.find((id) => !ID.test(id));
  if (bad !== undefined) throw new Error(`${what}: "${bad}" is not a valid id`);
  return out;
}

function fail(err: unknown): never {
  process.stderr.write(`imgvault credentials: ${(err as Error).message}\n`);
  process.exit(2);
}

async function init(opts: { dir: string; managers?: string; workers?: string; operator: string }) {
  const root = resolve(opts.dir);
  const managers = ids(opts.managers, '--managers');
  const workers = ids(opts.workers, '--workers');
  const keys = await ensureManagerKeys(root);
  const lines = [
    `${managerDir(root)}/  -> every manager host${managers.length ? ` (${managers.join(', ')})` : ''}: --credentials-dir`,
  ];
  for (const id of workers) {
    lines.push(
      `${await writeWorkerCredentials(root, keys, id)}/  -> worker ${id}'s host only: --credentials-dir (its metrics.credential: Prometheus only)`,
    );
  }
  const operator = await writeOperatorCredential(root, keys, opts.operator);
  lines.push(
    `${join(operator, 'operator.credential')}  -> the operator's machine: --secret-file of the admin commands`,
  );
  console.log(`credentials under ${root} (files 0600, folders 0700; existing files kept):`);
  for (const line of lines) console.log(`  ${line}`);
  console.log(`keep ${managerDir(root)} safe: it mints every credential (imgvault credentials worker <id>)`);
}

async function mintWorker(id: string, opts: { dir: string }) {
  const root = resolve(opts.dir);
  const dir = managerDir(root);
  await access(join(dir, MANAGER_KEY_FILES.workers)).catch(() => {
    throw new Error(`no manager keys in ${dir}: run imgvault credentials init --dir ${opts.dir} first`);
  });
  ids(id, 'worker id');
  const out = await writeWorkerCredentials(root, readManagerKeys(dir), id);
  console.log(`${out}/  -> worker ${id}'s host only: --credentials-dir`);
}

export function createCredentialsCommand(): Command {
  const credentials = new Command('credentials').description(
    'generate the per-role credentials of a cluster: keys for the managers, one folder per worker, the operator credential',
  );
  credentials
    .command('init')
    .description('write every credential under --dir and print which folder goes to which host')
    .requiredOption('--dir <folder>', 'where to write them (created 0700)')
    .option('--managers <ids>', 'manager ids, comma-separated (they all get the same manager folder)')
    .option('--workers <ids>', 'worker ids, comma-separated: one folder each')
    .option('--operator <name>', 'the name the operator credential carries', 'admin')
    .action((opts) => init(opts).catch(fail));
  credentials
    .command('worker <id>')
    .description("mint one more worker's folder from the manager keys under --dir")
    .requiredOption('--dir <folder>', 'the folder of `credentials init`')
    .action((id: string, opts) => mintWorker(id, opts).catch(fail));
  return credentials;
}

export function registerCredentialsCommand(program: Command): void {
  program.addCommand(createCredentialsCommand());
}
