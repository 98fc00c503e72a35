// Running managers as local child processes on 127.0.0.1: shared by `imgvault cluster`, the
// cluster integration test and the Raft benchmark, so all three start managers the same way.

import type { ChildProcess } from 'node:child_process';
import { fetchRaftView } from '../manager/raftView.ts';
import { type LocalProcessSpec, localProcessFlags, localUrl, spawnEntry } from './localProcess.ts';

export interface LocalManagerSpec extends LocalProcessSpec {
  /** `m1=http://127.0.0.1:7001,...` */
  peers: string;
}

export const managerUrl = localUrl;

export function peersSpec(members: { id: string; port: number }[]): string {
  return members.map((m) => `${m.id}=${managerUrl(m.port)}`).join(',');
}

export function spawnManager(spec: LocalManagerSpec): ChildProcess {
  return spawnEntry(
    'main',
    ['manager', ...localProcessFlags(spec), '--peers', spec.peers, ...(spec.args ?? [])],
    spec,
  );
}

export { fetchRaftView, type RaftView } from '../manager/raftView.ts';

/**
 * Polls until one of `urls` reports itself leader and every other answering manager agrees on it;
 * throws after `timeoutMs`.
 */
export async function waitForLeader(
  urls: string[],
  timeoutMs: number,
  headers: Record<string, string> = {},
): Promise<{ id: string; url: string; term: number }> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const views = (await Promise.all(urls.map((u) => fetchRaftView(u, 500, headers)))).map((v, i) => ({
      v,
      url: urls[i]!,
    }));
    const leader = views.find((x) => x.v?.role === 'leader');
    if (leader?.v && views.every((x) => x.v === null || x.v.leader?.id === leader.v!.id)) {
      return { id: leader.v.id, url: leader.url, term: leader.v.term };
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`no leader among ${urls.join(', ')} within ${timeoutMs} ms`);
}

/** SIGTERM, then SIGKILL if the child has not exited within `graceMs`. */
export async function stopChild(child: ChildProcess, graceMs = 10_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
}

export async function killChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGKILL');
  await exited;
}
