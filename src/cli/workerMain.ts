import { createWorkerCommand } from './workerCommand.ts';

/**
 * Standalone entry for one worker (`node --import tsx src/cli/workerMain.ts --id w1 ...`):
 * tests, benchmarks and containers start workers without going through the whole CLI.
 */
await createWorkerCommand().parseAsync(process.argv);
