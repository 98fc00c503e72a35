// The `imgvault` command. Each subcommand lives in its own file and registers itself here.

import { Command } from 'commander';
import { createRaftCommand } from './adminCommands.ts';
import { registerBackupCommand } from './backupCommand.ts';
import { registerClientCommands } from './clientCommands.ts';
import { registerClusterCommand } from './clusterCommand.ts';
import { registerDrillCommand } from './drillCommand.ts';
import { registerManagerCommand } from './managerCommand.ts';
import { registerRestoreCommand } from './restoreCommand.ts';
import { registerStatusCommand } from './statusCommand.ts';
import { registerWorkerCommand } from './workerCommand.ts';

const program = new Command('imgvault').description(
  'image backup store: managers (Raft) and storage workers',
);
registerManagerCommand(program);
registerWorkerCommand(program);
registerClusterCommand(program);
registerClientCommands(program);
registerBackupCommand(program);
registerRestoreCommand(program);
registerStatusCommand(program);
program.addCommand(createRaftCommand());
registerDrillCommand(program);

await program.parseAsync(process.argv);
