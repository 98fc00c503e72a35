// Which of our child processes opened a loopback connection: every process reaches another through
// one proxy per destination (its one advertised URL, the same for everyone, as the Raft member map
// and the worker table require), so the proxy tells sources apart by the socket's owner. Linux
// only: /proc/net/tcp gives the inode of the connecting socket, /proc/<pid>/fd who holds it.

import { readdir, readFile, readlink } from 'node:fs/promises';

const LOOPBACK_HEX = '0100007F';

function hexPort(port: number): string {
  return port.toString(16).toUpperCase().padStart(4, '0');
}

/** The inode of the socket 127.0.0.1:`localPort` -> 127.0.0.1:`remotePort`, or null. */
async function socketInode(localPort: number, remotePort: number): Promise<string | null> {
  const text = await readFile('/proc/net/tcp', 'utf8').catch(() => '');
  const local = `${LOOPBACK_HEX}:${hexPort(localPort)}`;
  const remote = `${LOOPBACK_HEX}:${hexPort(remotePort)}`;
  for (const line of text.split('\n')) {
    const cols = line.trim().split(/\s+/);
    if (cols[1] === local && cols[2] === remote) return cols[9] ?? null;
  }
  return null;
}

async function holds(pid: number, inode: string): Promise<boolean> {
  const fds = await readdir(`/proc/${pid}/fd`).catch(() => [] as string[]);
  const want = `socket:[${inode}]`;
  for (const fd of fds) {
    if ((await readlink(`/proc/${pid}/fd/${fd}`).catch(() => '')) === want) return true;
  }
  return false;
}

/**
 * The name of the process (among `pids`, name -> pid) holding the client end of a connection that
 * came from 127.0.0.1:`clientPort` to our proxy on `proxyPort`; null when none of them does (a
 * client of the test itself, or a process gone meanwhile).
 */
export async function connectionOwner(
  clientPort: number,
  proxyPort: number,
  pids: ReadonlyMap<string, number>,
): Promise<string | null> {
  const inode = await socketInode(clientPort, proxyPort);
  if (inode === null || inode === '0') return null;
  for (const [name, pid] of pids) if (await holds(pid, inode)) return name;
  return null;
}
