// A credential per role, on a real cluster started as `imgvault credentials init` lays it out: each
// credential opens its own role's routes, only as the id it names, and nothing else. A read-only
// client token reads and never writes.

import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  encodeMessageFrame,
  FRAME_ERROR,
  FrameSplitter,
  MAX_FRAME_BYTES,
} from '../../src/consensus/transport/messageCodec.ts';
import { RAFT_FROM_HEADER } from '../../src/consensus/transport/raftRoutes.ts';
import type { Message } from '../../src/consensus/types.ts';
import { CLUSTER_SECRET_HEADER } from '../../src/http/clusterAuth.ts';
import {
  managerDir,
  readManagerKeys,
  readWorkerCredentials,
  workerDir,
} from '../../src/http/credentialFiles.ts';
import {
  COPY_CREDENTIAL_HEADER,
  mintCredential,
  mintRaftCredential,
  type RoleKeys,
} from '../../src/http/credentials.ts';
import { ImageCluster, type ManagerProc, pngImage, until } from '../integration/imageCluster.ts';

const WRITER = 'read-write-token-0123456789abcdef';
const READER = 'read-only-token-0123456789abcdef';

let cluster: ImageCluster;
let keys: RoleKeys;
let leader: ManagerProc;

beforeAll(async () => {
  cluster = await ImageCluster.start({
    managers: 3,
    workers: 3,
    name: 'role-credentials',
    perRole: true,
    tokens: { client: [WRITER], readOnly: [READER] },
    startTimeoutMs: 90_000,
  });
  keys = readManagerKeys(managerDir(cluster.credentialsRoot));
  leader = await cluster.leader(60_000);
}, 180_000);

afterAll(async () => {
  await cluster?.close();
});

const workerCredential = (id: string) =>
  readWorkerCredentials(workerDir(cluster.credentialsRoot, id), id).own;

async function call(
  url: string,
  method: string,
  credential: string | undefined,
  body?: unknown,
  headers: Record<string, string> = {},
): Promise<{ status: number; json: { error?: { code?: string } } | null }> {
  const res = await fetch(url, {
    method,
    headers: {
      ...(credential === undefined ? {} : { [CLUSTER_SECRET_HEADER]: credential }),
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      ...headers,
    },
    ...(body === undefined
      ? {}
      : { body: typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body) }),
    redirect: 'manual',
    signal: AbortSignal.timeout(15_000),
  });
  const text = await res.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {}
  return { status: res.status, json };
}

const usage = (id: string) => ({ id, diskUsed: 0, diskFree: 1e12, blobCount: 0, blobBytes: 0 });

describe('the start of a manager', () => {
  // Runs first: later tests send forged batches on purpose.
  it("checks its peers' credentials without logging a malformed Raft batch on them", async () => {
    for (const m of cluster.managers) {
      const log = await readFile(join(cluster.root, `${m.id}.log`), 'utf8').catch(() => '');
      expect(log, m.id).not.toContain('raft.transport.bad_message');
    }
    // The probe: a GET of the Raft route takes only the credential naming this manager.
    const [a, b] = cluster.managers as [ManagerProc, ManagerProc];
    expect(
      (await call(`${b.url}/raft/messages`, 'GET', mintRaftCredential(keys.raft, a.id, b.id))).status,
    ).toBe(204);
    expect(
      (await call(`${b.url}/raft/messages`, 'GET', mintRaftCredential(keys.raft, a.id, a.id))).status,
    ).toBe(401);
  });
});

describe('a worker credential', () => {
  it('is refused on the Raft and operator routes', async () => {
    const w1 = workerCredential('w1');
    const heartbeat = { type: 'MsgHeartbeat', from: 'm1', to: leader.id, term: 1, commit: 0 };
    expect((await call(`${leader.url}/raft/messages`, 'POST', w1, { messages: [heartbeat] })).status).toBe(
      401,
    );
    for (const [method, path, body] of [
      ['POST', '/v1/cluster/nodes/w2/drain', undefined],
      ['GET', '/v1/cluster/nodes/w2/drain', undefined],
      ['POST', '/v1/cluster/transfer-leader', { to: 'm2' }],
      ['POST', '/v1/cluster/members', { id: 'm9', url: 'http://127.0.0.1:1' }],
      ['DELETE', '/v1/cluster/members/m3', undefined],
    ] as const) {
      const answer = await call(`${leader.url}${path}`, method, w1, body);
      expect(answer.status, `${method} ${path}`).toBe(401);
      expect(answer.json?.error?.code).toBe('Unauthorized');
    }
  });

  it('speaks for its own worker only, and cannot register a new id', async () => {
    const w1 = workerCredential('w1');
    const own = await call(`${leader.url}/internal/v1/workers/heartbeat`, 'POST', w1, usage('w1'));
    expect(own.status).toBe(200);
    const other = await call(`${leader.url}/internal/v1/workers/heartbeat`, 'POST', w1, usage('w2'));
    expect(other.status).toBe(403);
    expect(other.json?.error?.code).toBe('WrongWorker');
    const report = await call(`${leader.url}/internal/v1/workers/lost-copies`, 'POST', w1, {
      id: 'w2',
      blobs: [],
    });
    expect(report.status).toBe(403);
    const evil = `${JSON.stringify({ ...usage('evil'), url: 'http://127.0.0.1:1', zone: 'z' })}\n`;
    const register = await call(`${leader.url}/internal/v1/workers/register`, 'POST', w1, evil, {
      'content-type': 'application/x-ndjson',
    });
    expect(register.status).toBe(403);
    // A credential for the new id minted with any other key than the managers' is refused outright.
    const forged = mintCredential('not-the-workers-key', 'worker', 'evil');
    expect(
      (await call(`${leader.url}/internal/v1/workers/heartbeat`, 'POST', forged, usage('evil'))).status,
    ).toBe(401);
    const nodes = await fetch(`${leader.url}/v1/cluster/nodes`, { headers: cluster.authHeaders() });
    const ids = ((await nodes.json()) as { nodes: { id: string }[] }).nodes.map((n) => n.id);
    expect(ids.sort()).toEqual(['w1', 'w2', 'w3']);
  });
});

describe('a raft credential', () => {
  it('names its member: a message from another member is refused, and it opens no operator route', async () => {
    const [a, b] = cluster.managers.filter((m) => m.id !== leader.id) as [ManagerProc, ManagerProc];
    const asA = mintRaftCredential(keys.raft, a.id, b.id);
    const view = (await (
      await fetch(`${leader.url}/v1/cluster/raft`, { headers: cluster.authHeaders() })
    ).json()) as { term: number };
    // A heartbeat "from the leader" to b, sent with a's credential: the sender is not who it says.
    const forged = { type: 'MsgHeartbeat', from: leader.id, to: b.id, term: view.term, commit: 0 };
    const answer = await call(`${b.url}/raft/messages`, 'POST', asA, { messages: [forged] });
    expect(answer.status).toBe(403);
    expect(answer.json?.error?.code).toBe('ForgedSender');
    // The same credential with a message from its own member passes the credential check.
    const honest = { ...forged, from: a.id, type: 'MsgHeartbeatResp' };
    expect((await call(`${b.url}/raft/messages`, 'POST', asA, { messages: [honest] })).status).not.toBe(401);
    expect((await call(`${leader.url}/v1/cluster/transfer-leader`, 'POST', asA, { to: a.id })).status).toBe(
      401,
    );
    // The leader kept its place.
    expect((await cluster.leader(30_000)).id).toBe(leader.id);
  });

  it('names its member on a stream too: a later frame from another member ends the stream, ForgedSender', async () => {
    const [a, b] = cluster.managers.filter((m) => m.id !== leader.id) as [ManagerProc, ManagerProc];
    const asA = mintRaftCredential(keys.raft, a.id, b.id);
    const view = (await (
      await fetch(`${leader.url}/v1/cluster/raft`, { headers: cluster.authHeaders() })
    ).json()) as { term: number };
    // The first frame is a's own and opens the stream; the second claims to be the leader's.
    const honest: Message = { type: 'MsgHeartbeatResp', from: a.id, to: b.id, term: view.term, commit: 0 };
    const forged: Message = { type: 'MsgHeartbeat', from: leader.id, to: b.id, term: view.term, commit: 0 };
    const res = await fetch(`${b.url}/raft/stream`, {
      method: 'POST',
      headers: {
        [CLUSTER_SECRET_HEADER]: asA,
        [RAFT_FROM_HEADER]: a.id,
        'content-type': 'application/octet-stream',
      },
      body: Buffer.concat([encodeMessageFrame(honest), encodeMessageFrame(forged)]),
      signal: AbortSignal.timeout(15_000),
    });
    expect(res.status).toBe(200);
    const splitter = new FrameSplitter(MAX_FRAME_BYTES);
    splitter.push(Buffer.from(await res.arrayBuffer()));
    const errors: { error: { code: string } }[] = [];
    for (let f = splitter.next(); f !== null; f = splitter.next()) {
      if (f.kind === FRAME_ERROR) errors.push(JSON.parse(f.body.toString('utf8')));
    }
    expect(errors.map((e) => e.error.code)).toEqual(['ForgedSender']);
    // The forged heartbeat reached no node: the leader kept its place.
    expect((await cluster.leader(30_000)).id).toBe(leader.id);
  });

  it('names its receiver: what a manager sends to a member added at a hostile URL opens no other manager', async () => {
    const seen: IncomingHttpHeaders[] = [];
    const recorder = createServer((req, res) => {
      seen.push(req.headers);
      req.resume();
      req.on('end', () => res.writeHead(204).end());
    });
    await new Promise<void>((resolve) => recorder.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(recorder.address() as AddressInfo).port}`;
    let adding: Promise<unknown> = Promise.resolve();
    try {
      // The add resolves only once m9 has caught up, which a recorder never does: not awaited.
      adding = call(`${leader.url}/v1/cluster/members`, 'POST', cluster.secret, {
        id: 'm9',
        url,
      }).catch(() => null);
      await until('the leader sends Raft traffic to m9', async () => seen.length > 0, 30_000);
      const stolen = seen[0]?.[CLUSTER_SECRET_HEADER] as string;
      expect(stolen).toBeTruthy();
      const other = cluster.managers.find((m) => m.id !== leader.id) as ManagerProc;
      const view = (await (
        await fetch(`${leader.url}/v1/cluster/raft`, { headers: cluster.authHeaders() })
      ).json()) as { term: number };
      // Replayed to another manager as the leader's own: refused before any message is read.
      const forged = { type: 'MsgHeartbeat', from: leader.id, to: other.id, term: view.term, commit: 0 };
      const replay = await call(`${other.url}/raft/messages`, 'POST', stolen, { messages: [forged] });
      expect(replay.status).toBe(401);
    } finally {
      await call(`${leader.url}/v1/cluster/members/m9`, 'DELETE', cluster.secret);
      await adding;
      await new Promise<void>((resolve) => {
        recorder.close(() => resolve());
        recorder.closeAllConnections();
      });
    }
    expect((await cluster.leader(30_000)).id).toBe(leader.id);
  });
});

describe('the manager -> worker credentials', () => {
  it("open their own worker only; a worker's own credential opens no worker", async () => {
    const [w1, w2] = cluster.workers as [(typeof cluster.workers)[0], (typeof cluster.workers)[0]];
    expect((await call(`${w1.url}/stats`, 'GET', cluster.workerAccess('w1'))).status).toBe(200);
    expect((await call(`${w2.url}/stats`, 'GET', cluster.workerAccess('w1'))).status).toBe(401);
    expect((await call(`${w1.url}/stats`, 'GET', workerCredential('w1'))).status).toBe(401);
    expect((await call(`${w2.url}/stats`, 'GET', workerCredential('w1'))).status).toBe(401);
    expect((await call(`${w2.url}/stats`, 'GET', cluster.secret)).status).toBe(401);
  });

  it('let a holder copy to a target with the copy credential the manager hands it, which opens writes only', async () => {
    const [w1, w2] = cluster.workers as [(typeof cluster.workers)[0], (typeof cluster.workers)[0]];
    const bytes = pngImage(2_000);
    const sha256 = createHash('sha256').update(bytes).digest('hex');
    const put = await call(`${w1.url}/blobs/copied-one`, 'PUT', cluster.workerAccess('w1'), bytes, {
      'x-imgvault-sha256': sha256,
      'content-type': 'application/octet-stream',
    });
    expect(put.status).toBe(201);
    const copyBatch = `${w1.url}/blobs/copy-batch`;
    const batch = { target: w2.url, blobs: [{ id: 'copied-one', sha256 }] };
    const resultOf = (answer: { json: unknown }) =>
      (answer.json as { results: { ok: boolean }[] }).results[0];
    const without = await call(copyBatch, 'POST', cluster.workerAccess('w1'), batch);
    expect(without.status).toBe(200);
    expect(resultOf(without)).toMatchObject({ ok: false, error: { code: 'CopyTargetFailed' } });
    const copyOfW2 = mintCredential(mintCredential(keys.access, 'access', 'w2'), 'copy', 'w2');
    const copied = await call(copyBatch, 'POST', cluster.workerAccess('w1'), batch, {
      [COPY_CREDENTIAL_HEADER]: copyOfW2,
    });
    expect(copied.status).toBe(200);
    expect(resultOf(copied)).toMatchObject({ ok: true });
    expect((await cluster.workerBlob(w2, 'copied-one')).bytes.equals(bytes)).toBe(true);
    // What the holder learnt opens the target's writes, not its reads, deletes or lists.
    expect((await call(`${w2.url}/blobs/copied-one`, 'GET', copyOfW2)).status).toBe(401);
    expect((await call(`${w2.url}/blobs/copied-one`, 'DELETE', copyOfW2)).status).toBe(401);
    expect((await call(`${w2.url}/inventory`, 'GET', copyOfW2)).status).toBe(401);
  });

  it('carry uploads to the workers end to end', async () => {
    const bytes = pngImage(5_000);
    const res = await fetch(`${leader.url}/v1/images/role-upload`, {
      method: 'PUT',
      headers: { ...cluster.authHeaders(), 'content-type': 'image/png' },
      body: bytes,
      signal: AbortSignal.timeout(30_000),
    });
    expect(res.status).toBe(201);
    const got = await fetch(`${leader.url}/v1/images/role-upload`, { headers: cluster.authHeaders() });
    expect(Buffer.from(await got.arrayBuffer()).equals(bytes)).toBe(true);
  });

  it('sign direct-read links a worker checks with its access credential, good at that worker only', async () => {
    const bytes = pngImage(4_000);
    const put = await fetch(`${leader.url}/v1/images/role-direct`, {
      method: 'PUT',
      headers: { ...cluster.authHeaders(), 'content-type': 'image/png' },
      body: bytes,
      signal: AbortSignal.timeout(30_000),
    });
    expect(put.status).toBe(201);
    const redirect = await fetch(`${leader.url}/v1/images/role-direct?direct=1`, {
      headers: cluster.authHeaders(),
      redirect: 'manual',
    });
    expect(redirect.status).toBe(307);
    const link = new URL(String(redirect.headers.get('location')));
    // No client token and no cluster credential: the link alone opens the worker's copy.
    const direct = await fetch(link, { redirect: 'manual' });
    expect(direct.status).toBe(200);
    expect(Buffer.from(await direct.arrayBuffer()).equals(bytes)).toBe(true);
    // The same link presented at another worker is not signed for it.
    const other = cluster.workers.find((w) => !link.href.startsWith(w.url))!;
    const elsewhere = await fetch(`${other.url}${link.pathname}${link.search}`);
    expect(elsewhere.status).toBe(401);
    await elsewhere.body?.cancel();
  });
});

describe('a read-only client token', () => {
  it('reads, and gets a JSON 403 on any upload or delete, with nothing stored or removed', async () => {
    const reader = { authorization: `Bearer ${READER}` };
    const writer = cluster.authHeaders();
    const bytes = pngImage(3_000);
    const stored = await fetch(`${leader.url}/v1/images/kept-one`, {
      method: 'PUT',
      headers: { ...writer, 'content-type': 'image/png' },
      body: bytes,
    });
    expect(stored.status).toBe(201);
    for (const [method, path] of [
      ['POST', '/v1/images'],
      ['PUT', '/v1/images/read-only-upload'],
      ['DELETE', '/v1/images/kept-one'],
    ] as const) {
      const answer = await call(
        `${leader.url}${path}`,
        method,
        undefined,
        method === 'DELETE' ? undefined : bytes,
        {
          ...reader,
          'content-type': 'image/png',
        },
      );
      expect(answer.status, `${method} ${path}`).toBe(403);
      expect(answer.json?.error?.code).toBe('ReadOnlyToken');
    }
    const read = await fetch(`${leader.url}/v1/images/kept-one`, { headers: reader });
    expect(read.status).toBe(200);
    expect(Buffer.from(await read.arrayBuffer()).equals(bytes)).toBe(true);
    expect((await fetch(`${leader.url}/v1/images/read-only-upload`, { headers: reader })).status).toBe(404);
  });
});

describe('the operator credential', () => {
  it('drains a worker: repair moves its copies between workers with the copy credentials', async () => {
    const holders = async () => {
      const held = await Promise.all(
        cluster.workers.map(async (w) =>
          (await cluster.workerBlob(w, 'kept-one')).status === 200 ? w.id : null,
        ),
      );
      return held.filter((id) => id !== null);
    };
    const before = await holders();
    expect(before).toHaveLength(2);
    const drained = before[0]!;
    const drain = await call(`${leader.url}/v1/cluster/nodes/${drained}/drain`, 'POST', cluster.secret);
    expect(drain.status).toBe(202);
    const state = async () =>
      (
        (await call(`${leader.url}/v1/cluster/nodes/${drained}/drain`, 'GET', cluster.secret)).json as {
          state?: string;
        } | null
      )?.state;
    await until(`${drained} drained`, async () => (await state()) === 'drained', 90_000);
    // The copy moved to the worker that had none: holder to target, with the target's copy credential.
    const after = (await holders()).filter((id) => id !== drained);
    expect(after).toHaveLength(2);
    expect(after).not.toContain(drained);
    const res = await fetch(`${leader.url}/v1/images/kept-one`, { headers: cluster.authHeaders() });
    expect(res.status).toBe(200);
    expect(
      (await call(`${leader.url}/v1/cluster/nodes/${drained}/undrain`, 'POST', cluster.secret)).status,
    ).toBe(200);
  }, 120_000);
});

describe('a URL another worker holds', () => {
  it('is refused to a new id (409), which would otherwise be sent that worker’s credential', async () => {
    const w2 = cluster.workers.find((w) => w.id === 'w2') as (typeof cluster.workers)[0];
    const asW9 = mintCredential(keys.workers, 'worker', 'w9');
    const header = `${JSON.stringify({ ...usage('w9'), url: w2.url, zone: 'z' })}\n`;
    const register = await call(`${leader.url}/internal/v1/workers/register`, 'POST', asW9, header, {
      'content-type': 'application/x-ndjson',
    });
    expect(register.status).toBe(409);
    expect(register.json?.error?.code).toBe('WorkerUrlConflict');
    expect(JSON.stringify(register.json)).toContain('w2');
    const nodes = await fetch(`${leader.url}/v1/cluster/nodes`, { headers: cluster.authHeaders() });
    const ids = ((await nodes.json()) as { nodes: { id: string }[] }).nodes.map((n) => n.id);
    expect(ids.sort()).toEqual(cluster.workers.map((w) => w.id).sort());
    expect(ids).not.toContain('w9');
  });
});
