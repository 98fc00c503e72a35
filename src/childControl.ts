// The control channel between `imgvault cluster` and the managers and workers it runs. The
// launcher spawns its children in their own process group (so a terminal's Ctrl-C reaches the
// launcher alone) with a Node IPC channel, and stops them with one message rather than a signal.
// The message says more than a signal can: the whole cluster is stopping, so a leader must not
// wait to hand over to followers that are stopping too.

/** Sent by the launcher: stop cleanly, the whole cluster is stopping. */
export const CLUSTER_STOP_MESSAGE = 'imgvault:cluster-stop';

/**
 * Calls `onStop` once when the launcher asks this process to stop, or when the launcher is gone
 * (its channel closed: killed, crashed), so no child outlives it. No-op without an IPC channel (a
 * process started by hand, a container). The channel does not keep the process alive.
 */
export function onLauncherStop(onStop: (why: 'cluster-stop' | 'launcher-gone') => void): void {
  if (typeof process.send !== 'function') return;
  let called = false;
  const once = (why: 'cluster-stop' | 'launcher-gone') => {
    if (called) return;
    called = true;
    onStop(why);
  };
  if (!process.connected) {
    // The launcher went before this listener was added (a slow start): 'disconnect' has fired.
    setImmediate(() => once('launcher-gone'));
    return;
  }
  process.on('message', (msg) => {
    if (msg === CLUSTER_STOP_MESSAGE) once('cluster-stop');
  });
  process.once('disconnect', () => once('launcher-gone'));
  process.channel?.unref();
}
