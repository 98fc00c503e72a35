import { createWorkerCommand } from '../cli/workerCommand.ts';

/**
 * Standalone entry for one worker (`node --import tsx src/storagenode/workerMain.ts --id w1 ...`):
 * tests, benchmarks and containers start workers without going through the whole CLI.
 */
await createWorkerCommand().parseAsync(process.argv);
