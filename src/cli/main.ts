// The `imgvault` command. Each subcommand lives in its own file and registers itself here.

import { Command } from 'commander';
import { registerClusterCommand } from './clusterCommand.ts';
import { registerManagerCommand } from './managerCommand.ts';

const program = new Command('imgvault').description(
  'image backup store: managers (Raft) and storage workers',
);
registerManagerCommand(program);
registerClusterCommand(program);

await program.parseAsync(process.argv);
