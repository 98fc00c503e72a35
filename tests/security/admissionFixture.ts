// The upload admission tests' cluster and the cases they share, tried in each staging mode
// (uploadAdmission.test.ts: every body in a staged file; uploadAdmissionMemory.test.ts: bodies held
// in memory): one manager and two workers, at most 3 uploads in flight and 2 per client, an upload
// over a cap waiting 1 s for room before its 503.

import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { expect } from 'vitest';
import { SLAB_BYTES } from '../../src/manager/heldBodies.ts';
import {
  expectRefusedEarly,
  type HeldUploadOptions,
  holdUpload,
  settle,
  slotsFree,
} from '../helpers/heldUploads.ts';
import { ImageCluster, pngImage, until } from '../integration/imageCluster.ts';

export const TOKENS = {
  a: 'token-a-0123456789abcdef',
  b: 'token-b-0123456789abcdef',
  c: 'token-c-0123456789abcdef',
};

export interface AdmissionCluster {
  cluster: ImageCluster;
  url: string;
  stagingDir: string;
  /**
   * Uploads holding staging now (admitted, past their type sniff): staged files, and with
   * `inMemory` the bodies the leader holds, each of one slab (at most 256 KiB).
   */
  held(): Promise<number>;
}

export async function startAdmissionCluster(opts: {
  name: string;
  /** Flags past the caps every admission test shares. */
  args: string[][];
  inMemory: boolean;
}): Promise<AdmissionCluster> {
  const cluster = await ImageCluster.start({
    managers: 1,
    workers: 2,
    name: opts.name,
    tokens: { client: Object.values(TOKENS) },
    clientToken: TOKENS.c,
    managerArgs: [
      ['--max-uploads', '3'],
      ['--max-uploads-per-client', '2'],
      // Short, so that the refusals come soon; the wait itself is tested on its own.
      ['--upload-wait-ms', '1000'],
      ...opts.args,
    ].flat(),
  });
  const leader = await cluster.leader();
  const stagingDir = join(leader.dataDir, 'staging');
  const ac: AdmissionCluster = {
    cluster,
    url: leader.url,
    stagingDir,
    async held() {
      const files = (await readdir(stagingDir)).length;
      if (!opts.inMemory) return files;
      return files + (await leaderGauge(ac, 'imgvault_staging_memory_bytes')) / SLAB_BYTES;
    },
  };
  return ac;
}

/** One gauge of the leader's /metrics; fails when the series is missing. */
export async function leaderGauge(ac: AdmissionCluster, name: string): Promise<number> {
  const res = await fetch(`${ac.url}/metrics`, {
    headers: ac.cluster.authHeaders(),
    signal: AbortSignal.timeout(5_000),
  });
  const line = (await res.text()).split('\n').find((l) => l.startsWith(`${name} `));
  if (!line) throw new Error(`the leader exports no ${name}`);
  return Number(line.slice(name.length + 1));
}

export async function waitHeld(ac: AdmissionCluster, n: number): Promise<void> {
  await until(`${n} uploads holding staging`, async () => (await ac.held()) >= n, 15_000);
}

/** Waits until `token` holds no slot any more (a whole upload of it passes) and nothing is staged. */
export async function released(ac: AdmissionCluster, token: string): Promise<void> {
  await slotsFree(ac.url, token);
  await until('nothing staged', async () => (await ac.held()) === 0, 10_000);
}

export async function deleteImage(ac: AdmissionCluster, id: string, token: string): Promise<void> {
  const del = await fetch(`${ac.url}/v1/images/${id}`, {
    method: 'DELETE',
    headers: { authorization: `Bearer ${token}` },
  });
  expect(del.status).toBe(204);
}

/** The third concurrent upload of one client, and the fourth of all clients, refused before their bodies. */
export async function refusesPastUploadCaps(ac: AdmissionCluster): Promise<void> {
  const open = (opts: HeldUploadOptions) => holdUpload(ac.url, opts);
  const holders = [open({ token: TOKENS.a, trickle: true }), open({ token: TOKENS.a, trickle: true })];
  try {
    await waitHeld(ac, 2);
    const third = open({ token: TOKENS.a, trickle: true });
    holders.push(third);
    expectRefusedEarly(third, await settle(third.answer), 'TooManyUploads', 'maxUploadsPerClient');

    holders.push(open({ token: TOKENS.b, trickle: true }));
    await waitHeld(ac, 3);
    const fourth = open({ token: TOKENS.c, trickle: true });
    holders.push(fourth);
    expectRefusedEarly(fourth, await settle(fourth.answer), 'TooManyUploads', 'maxUploads ');
    // A refused upload staged nothing.
    expect(await ac.held()).toBe(3);
  } finally {
    for (const h of holders) h.stop();
  }
  await released(ac, TOKENS.a);
}

/** An upload over its client's cap waits, staging nothing, and lands once one of that client's uploads ends. */
export async function admitsWaitingUpload(ac: AdmissionCluster): Promise<void> {
  const open = (opts: HeldUploadOptions) => holdUpload(ac.url, opts);
  const holders = [open({ token: TOKENS.a, trickle: true }), open({ token: TOKENS.a, trickle: true })];
  try {
    await waitHeld(ac, 2);
    const image = pngImage(20_000);
    const waiting = open({ token: TOKENS.a, image, first: image });
    holders.push(waiting);
    // Still waiting after half the wait: no answer, and its body unread.
    const early = await Promise.race([waiting.answer, new Promise((r) => setTimeout(() => r(null), 500))]);
    expect(early).toBeNull();
    expect(await ac.held()).toBe(2);
    holders[0]!.stop();
    const answer = await settle(waiting.answer);
    expect(answer.status).toBe(201);
    await deleteImage(ac, (JSON.parse(answer.body) as { id: string }).id, TOKENS.a);
  } finally {
    for (const h of holders) h.stop();
  }
  await released(ac, TOKENS.a);
}
