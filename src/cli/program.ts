// The `imgvault` program, built so a call loads only the command it runs: `imgvault --help` lists
// every command from COMMAND_INDEX without importing any of them, and `imgvault status` imports
// statusCommand.ts alone, not the manager, the worker or the drill. The ahead-of-time build
// (scripts/build.mjs) keeps each of these dynamic imports a chunk of its own, so this holds for the
// built command too; under tsx, which transpiles each module it loads, it matters even more.

import { Command, Help } from 'commander';

type Register = (program: Command) => void;

/** The CLI's trusted CA when `--ca` is not given (a private CA signed the managers' certificates). */
const CA_ENV = 'IMGVAULT_CA';

interface IndexEntry {
  /** The line `imgvault --help` shows for it, as commander prints it for the real command. */
  term: string;
  description: string;
  load: () => Promise<Register>;
}

const clientCommands = async () => (await import('./clientCommands.ts')).registerClientCommands;

/**
 * Every top-level command, in the order of `imgvault --help`. A test builds the help from the real
 * commands and checks it against this index, so a changed description or flag shows up there.
 */
export const COMMAND_INDEX: Record<string, IndexEntry> = {
  manager: {
    term: 'manager [options]',
    description: 'run one manager (Raft replica + API); flags fall back to IMGVAULT_* environment variables',
    load: async () => (await import('./managerCommand.ts')).registerManagerCommand,
  },
  worker: {
    term: 'worker [options]',
    description: 'run a storage worker: stores blobs on local disk and registers with the managers',
    load: async () => (await import('./workerCommand.ts')).registerWorkerCommand,
  },
  cluster: {
    term: 'cluster [options]',
    description:
      'run an embedded cluster on 127.0.0.1 (managers and workers as child processes, restarted if they die); Ctrl-C stops it',
    load: async () => (await import('./clusterCommand.ts')).registerClusterCommand,
  },
  upload: {
    term: 'upload [options] <paths...>',
    description:
      'upload image files (folders are walked); prints "<id><TAB><file>" per file and a summary. ' +
      'Each file is PUT to an id chosen here, so a retry after an unknown outcome never stores it twice',
    load: clientCommands,
  },
  get: { term: 'get [options] <id>', description: 'download an image', load: clientCommands },
  ls: {
    term: 'ls [options]',
    description:
      'list images in id order (ids sort as strings, not by upload time): id, size, type, created, replicas; printed page by page as they arrive',
    load: clientCommands,
  },
  rm: { term: 'rm [options] <id>', description: 'delete an image', load: clientCommands },
  backup: {
    term: 'backup [options] <folder>',
    description:
      'back up a folder into a backup set: only new or changed files are sent (size and mtime, then ' +
      'sha256), content the cluster already holds is only named; a re-run resumes. Files that are not ' +
      'images (XMP/JSON sidecars, .AAE, .MOV) are skipped and counted unless --all-files',
    load: async () => (await import('./backupCommand.ts')).registerBackupCommand,
  },
  restore: {
    term: 'restore [options] <set> <folder>',
    description:
      'restore a backup set into a folder, byte for byte with modification times; every file is ' +
      'verified by sha256. A re-run skips files already identical; a different local file is left ' +
      'alone (counted as a conflict) unless --force',
    load: async () => (await import('./restoreCommand.ts')).registerRestoreCommand,
  },
  status: {
    term: 'status [options]',
    description:
      'is the cluster healthy? every manager (role, term, leader, commit/applied/last index, lag, last contact), ' +
      'every worker, object counts; a manager that does not answer is named. ' +
      'Exit status 0 healthy, 3 answered with problems, 1 no manager answered',
    load: async () => (await import('./statusCommand.ts')).registerStatusCommand,
  },
  credentials: {
    term: 'credentials',
    description:
      'generate the per-role credentials of a cluster: keys for the managers, one folder per worker, the operator credential',
    load: async () => (await import('./credentialsCommand.ts')).registerCredentialsCommand,
  },
  raft: {
    term: 'raft',
    description: 'Raft operations on the managers (operator credential required)',
    load: async () => {
      const { createRaftCommand } = await import('./adminCommands.ts');
      return (program) => program.addCommand(createRaftCommand());
    },
  },
  s3: {
    term: 's3',
    description: 'the S3-compatible endpoint: access keys (operator credential required)',
    load: async () => {
      const { createS3Command } = await import('./s3Command.ts');
      return (program) => program.addCommand(createS3Command());
    },
  },
  drill: {
    term: 'drill [options] <name>',
    description:
      'run a failover drill on a cluster of its own under upload/read/delete load, then check every image',
    load: async () => (await import('./drillCommand.ts')).registerDrillCommand,
  },
};

function bareProgram(): Command {
  return new Command('imgvault')
    .description('image backup store: managers (Raft) and storage workers')
    .option('--ca <file>', `PEM CA bundle to trust for https:// manager URLs [env ${CA_ENV}]`)
    .hook('preAction', async (program) => {
      const file = (program.opts() as { ca?: string }).ca ?? process.env[CA_ENV];
      if (file) (await import('./clusterClient.ts')).trustCa(file);
    });
}

/** The command `args` (process.argv without node and the script) runs, `help <command>` included. */
export function commandNamed(args: readonly string[]): string | undefined {
  // The program's own option may come first: `imgvault --ca ca.pem status`.
  let rest = args;
  if (rest[0] === '--ca') rest = rest.slice(2);
  else if (rest[0]?.startsWith('--ca=')) rest = rest.slice(1);
  const name = rest[0] === 'help' ? rest[1] : rest[0];
  return name !== undefined && Object.hasOwn(COMMAND_INDEX, name) ? name : undefined;
}

/**
 * The program for one call: the named command loaded for real, or, when no known command is named
 * (`--help`, a typo), every command as a stand-in that only lists itself.
 */
export async function programFor(args: readonly string[]): Promise<Command> {
  const program = bareProgram();
  const name = commandNamed(args);
  if (name !== undefined) {
    (await COMMAND_INDEX[name]!.load())(program);
    return program;
  }
  const plain = new Help();
  program.configureHelp({
    subcommandTerm: (cmd) => COMMAND_INDEX[cmd.name()]?.term ?? plain.subcommandTerm(cmd),
  });
  for (const [name, entry] of Object.entries(COMMAND_INDEX))
    program.command(name).description(entry.description);
  return program;
}

/** Every command loaded: for the configuration reference and the test of COMMAND_INDEX. */
export async function fullProgram(): Promise<Command> {
  const program = bareProgram();
  const loaders = new Set(Object.values(COMMAND_INDEX).map((e) => e.load));
  for (const load of loaders) (await load())(program);
  return program;
}
