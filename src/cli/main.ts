// The `imgvault` command. Each subcommand lives in its own file, listed in COMMAND_INDEX
// (program.ts); a call loads only the one it runs.

import { programFor } from './program.ts';

const program = await programFor(process.argv.slice(2));
await program.parseAsync(process.argv);
