// Exit statuses of `imgvault worker` that its supervisor acts on, apart from the worker's code so
// the launcher (src/cli/clusterCommand.ts) reads them without loading the worker.

/**
 * The managers said this worker was removed from the cluster (`imgvault worker remove`): its id
 * never registers again, so a supervisor must not start it again.
 */
export const EXIT_REMOVED = 3;
