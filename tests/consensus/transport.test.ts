import { createServer, request as httpRequest, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { serve } from '@hono/node-server';
import { Hono } from 'hono';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { HttpTransport, type HttpTransportOptions } from '../../src/consensus/transport/httpTransport.ts';
import { type ReplySink, serveInboundStream } from '../../src/consensus/transport/inboundStream.ts';
import { encodeMessageFrame } from '../../src/consensus/transport/messageCodec.ts';
import {
  RAFT_FROM_HEADER,
  RAFT_SNAPSHOT_HEADER,
  RAFT_STREAM_PATH,
  type RaftRoutesOptions,
  raftRoutes,
} from '../../src/consensus/transport/raftRoutes.ts';
import type { Message } from '../../src/consensus/types.ts';
import { CLUSTER_SECRET_HEADER } from '../../src/http/clusterAuth.ts';
import { until } from '../helpers/until.ts';

const SECRET = 'test-cluster-secret';

interface Received {
  msg: Message;
  /** Which HTTP request (1-based, per server) carried it. */
  request: number;
}

interface PeerServer {
  url: string;
  received: Received[];
  requests: number;
  close: () => Promise<void>;
}

const cleanups: (() => Promise<void>)[] = [];

afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** A real HTTP server mounting raftRoutes; `gate` (if given) holds every request until it resolves. */
async function startPeer(
  opts: {
    gate?: () => Promise<void>;
    selfId?: string;
    maxBodyBytes?: number;
    maxSnapshotBodyBytes?: number;
    onMessage?: (msg: Message) => void;
    attachReplySink?: RaftRoutesOptions['attachReplySink'];
    onStreamEnd?: RaftRoutesOptions['onStreamEnd'];
  } = {},
): Promise<PeerServer> {
  const peer: PeerServer = { url: '', received: [], requests: 0, close: async () => {} };
  const app = new Hono();
  let current = 0;
  app.use('/raft/*', async (_c, next) => {
    if (opts.gate) await opts.gate();
    current = ++peer.requests;
    await next();
  });
  app.route(
    '/',
    raftRoutes({
      secret: SECRET,
      onMessage: (msg) => {
        peer.received.push({ msg, request: current });
        opts.onMessage?.(msg);
      },
      ...(opts.selfId ? { selfId: opts.selfId } : {}),
      ...(opts.attachReplySink ? { attachReplySink: opts.attachReplySink } : {}),
      ...(opts.onStreamEnd ? { onStreamEnd: opts.onStreamEnd } : {}),
      ...(opts.maxBodyBytes ? { maxBodyBytes: opts.maxBodyBytes } : {}),
      ...(opts.maxSnapshotBodyBytes ? { maxSnapshotBodyBytes: opts.maxSnapshotBodyBytes } : {}),
    }),
  );
  const server = await new Promise<Server>((resolve) => {
    const s = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, () => resolve(s as Server));
  });
  peer.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  let closed = false;
  peer.close = async () => {
    if (closed) return;
    closed = true;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };
  cleanups.push(peer.close);
  return peer;
}

/** A URL on which nothing listens: a port that was just bound and released. */
async function deadUrl(): Promise<string> {
  const peer = await startPeer();
  await peer.close();
  return peer.url;
}

function transport(opts: Partial<HttpTransportOptions> & { peers: Record<string, string> }): HttpTransport {
  const t = new HttpTransport({ id: 'a', secret: SECRET, ...opts });
  cleanups.push(() => t.close());
  return t;
}

function heartbeat(to: string, commit: number): Message {
  return { type: 'MsgHeartbeat', from: 'a', to, term: 1, commit };
}

function snap(to: string): Message {
  return {
    type: 'MsgSnap',
    from: 'a',
    to,
    term: 2,
    snapshot: {
      metadata: { index: 10, term: 2, confState: { voters: ['a', 'b'], learners: [] } },
      data: 'state',
    },
  };
}

async function post(url: string, body: string, secret: string | null = SECRET): Promise<Response> {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (secret !== null) headers[CLUSTER_SECRET_HEADER] = secret;
  return fetch(`${url}/raft/messages`, { method: 'POST', headers, body });
}

async function errorOf(res: Response): Promise<{ code: string; message: string }> {
  const body = (await res.json()) as { error: { code: string; message: string } };
  return body.error;
}

describe('raftRoutes', () => {
  it('refuses a batch without the cluster secret or with a wrong one (401)', async () => {
    const peer = await startPeer();
    const body = JSON.stringify({ messages: [heartbeat('b', 1)] });
    for (const secret of [null, 'wrong-secret']) {
      const res = await post(peer.url, body, secret);
      expect(res.status).toBe(401);
      expect((await errorOf(res)).code).toBe('Unauthorized');
    }
    expect(peer.received).toEqual([]);
  });

  it('answers 400 with a JSON error to malformed JSON and to schema violations, and keeps serving', async () => {
    const peer = await startPeer();
    const bad = [
      '{"messages": [',
      'null',
      JSON.stringify({ messages: [] }),
      JSON.stringify({ messages: [{ type: 'MsgHeartbeat', from: 'a', term: 1 }] }),
      JSON.stringify({ messages: [{ ...heartbeat('b', 1), type: 'MsgNope' }] }),
      JSON.stringify({ messages: [{ ...heartbeat('b', 1), term: -1 }] }),
      JSON.stringify({ messages: [{ ...heartbeat('b', 1), to: '' }] }),
      JSON.stringify({
        messages: [{ ...heartbeat('b', 1), entries: [{ term: 1, index: 1.5, type: 'normal', data: '' }] }],
      }),
    ];
    for (const body of bad) {
      const res = await post(peer.url, body);
      expect(res.status, body).toBe(400);
      const error = await errorOf(res);
      expect(['BadJson', 'BadMessage']).toContain(error.code);
      expect(error.message.length).toBeGreaterThan(0);
    }
    expect(peer.received).toEqual([]);
    const ok = await post(peer.url, JSON.stringify({ messages: [heartbeat('b', 7)] }));
    expect(ok.status).toBe(204);
    expect(peer.received.map((r) => r.msg)).toEqual([heartbeat('b', 7)]);
  });

  it('refuses a body over the limit (413) and a batch addressed to another node (400)', async () => {
    const peer = await startPeer({ maxBodyBytes: 1024, selfId: 'b' });
    const big = { ...heartbeat('b', 1), context: 'x'.repeat(2048) };
    const tooLarge = await post(peer.url, JSON.stringify({ messages: [big] }));
    expect(tooLarge.status).toBe(413);
    expect((await errorOf(tooLarge)).code).toBe('PayloadTooLarge');
    const misaddressed = await post(peer.url, JSON.stringify({ messages: [heartbeat('c', 1)] }));
    expect(misaddressed.status).toBe(400);
    expect((await errorOf(misaddressed)).code).toBe('WrongRecipient');
    expect(peer.received).toEqual([]);
  });
});

async function openStream(url: string, body: Buffer, from = 'a', secret = SECRET): Promise<Response> {
  return fetch(`${url}${RAFT_STREAM_PATH}`, {
    method: 'POST',
    headers: {
      'content-type': 'application/octet-stream',
      [CLUSTER_SECRET_HEADER]: secret,
      [RAFT_FROM_HEADER]: from,
    },
    body,
  });
}

describe('the raft stream route', () => {
  it('refuses a stream without the credential (401), or that names no sender (400)', async () => {
    const peer = await startPeer({ selfId: 'b' });
    const frame = encodeMessageFrame(heartbeat('b', 1));
    const res = await openStream(peer.url, frame, 'a', 'wrong-secret');
    expect(res.status).toBe(401);
    const unnamed = await fetch(`${peer.url}${RAFT_STREAM_PATH}`, {
      method: 'POST',
      headers: { [CLUSTER_SECRET_HEADER]: SECRET },
      body: frame,
    });
    expect(unnamed.status).toBe(400);
    expect(peer.received).toEqual([]);
  });

  it('answers a malformed first frame with a 400 JSON error, and hands on nothing', async () => {
    const peer = await startPeer({ selfId: 'b' });
    const good = encodeMessageFrame(heartbeat('b', 1));
    const badLength = Buffer.from(good);
    badLength.writeUInt32LE(0xffffffff, 0);
    const badType = Buffer.from(good);
    badType[5] = 200;
    const badTerm = Buffer.from(good);
    badTerm.writeDoubleLE(-1, good.length - 8);
    const trailing = Buffer.concat([good.subarray(0, 4), good.subarray(4), Buffer.from([0])]);
    trailing.writeUInt32LE(good.length - 4 + 1, 0);
    for (const body of [
      badLength,
      badType,
      badTerm,
      trailing,
      good.subarray(0, 9),
      Buffer.from('{"messages":[]}'),
    ]) {
      const res = await openStream(peer.url, body);
      expect(res.status).toBe(400);
      expect((await errorOf(res)).code).toBe('BadFrame');
    }
    const forged = await openStream(peer.url, encodeMessageFrame({ ...heartbeat('b', 1), from: 'c' }));
    expect(forged.status).toBe(403);
    expect((await errorOf(forged)).code).toBe('ForgedSender');
    const misaddressed = await openStream(peer.url, encodeMessageFrame(heartbeat('c', 1)));
    expect(misaddressed.status).toBe(400);
    expect((await errorOf(misaddressed)).code).toBe('WrongRecipient');
    expect(peer.received).toEqual([]);
  });

  it('ends a stream at its first bad frame with an error frame; what came before was handed on, nothing after', async () => {
    const peer = await startPeer({ selfId: 'b' });
    const bad = encodeMessageFrame(heartbeat('b', 2));
    bad[6] = 32; // a reject value without reject
    const body = Buffer.concat([
      encodeMessageFrame(heartbeat('b', 1)),
      bad,
      encodeMessageFrame(heartbeat('b', 3)),
    ]);
    const res = await openStream(peer.url, body);
    expect(res.status).toBe(200);
    const answer = Buffer.from(await res.arrayBuffer());
    expect(answer[4]).toBe(2);
    const error = JSON.parse(answer.subarray(5, 4 + answer.readUInt32LE(0)).toString('utf8'));
    expect(error.error.code).toBe('BadFrame');
    expect(peer.received.map((r) => r.msg.commit)).toEqual([1]);
  });
});

describe('the end of a raft stream', () => {
  it('is no loss of the peer when the stream ends cleanly (a rotation), but is when its socket breaks', async () => {
    const lost: string[] = [];
    const peer = await startPeer({ selfId: 'b', onStreamEnd: (from) => lost.push(from) });
    const clean = await openStream(peer.url, encodeMessageFrame(heartbeat('b', 1)));
    expect(clean.status).toBe(200);
    await clean.arrayBuffer();
    expect(peer.received).toHaveLength(1);
    expect(lost).toEqual([]);

    const { port } = new URL(peer.url);
    const broken = httpRequest({
      host: '127.0.0.1',
      port,
      method: 'POST',
      path: RAFT_STREAM_PATH,
      headers: {
        'content-type': 'application/octet-stream',
        [CLUSTER_SECRET_HEADER]: SECRET,
        [RAFT_FROM_HEADER]: 'a',
      },
    });
    broken.on('error', () => {});
    broken.write(encodeMessageFrame(heartbeat('b', 2)));
    await until('the frame of the second stream', () => peer.received.length === 2, 5000);
    expect(lost).toEqual([]);
    broken.destroy();
    await until('the broken stream reported', () => lost.length === 1, 5000);
    expect(lost).toEqual(['a']);
  });
});

describe('HttpTransport', () => {
  it('delivers each peer its messages in order, all on one long-lived stream', async () => {
    const b = await startPeer();
    const t = transport({ peers: { b: b.url }, maxBatchMessages: 10 });
    const sent: Message[] = [];
    for (let i = 1; i <= 55; i++) {
      sent.push(heartbeat('b', i));
      t.send([sent.at(-1)!]);
    }
    await until('55 messages', () => b.received.length === 55, 5000);
    for (let i = 56; i <= 80; i++) {
      sent.push(heartbeat('b', i));
      t.send([sent.at(-1)!]);
      if (i % 5 === 0) await new Promise((r) => setImmediate(r));
    }
    await until('80 messages', () => b.received.length === 80, 5000);
    expect(b.received.map((r) => r.msg)).toEqual(sent);
    expect(b.requests).toBe(1);
    await until('sent counter', () => t.stats().sent === 80, 2000);
    expect(t.stats()).toMatchObject({ sent: 80, dropped: 0, failed: 0, queued: 0 });
  });

  it('a dead peer does not delay a live one, and is reported unreachable', async () => {
    const live = await startPeer();
    const unreachable: string[] = [];
    const t = transport({
      peers: { dead: await deadUrl(), live: live.url },
      onUnreachable: (p) => unreachable.push(p),
    });
    for (let round = 1; round <= 3; round++) {
      const started = Date.now();
      t.send([heartbeat('dead', round), heartbeat('live', round)]);
      await until(`live peer round ${round}`, () => live.received.length === round, 1000);
      expect(Date.now() - started).toBeLessThan(1000);
    }
    await until('unreachable report', () => unreachable.length > 0, 2000);
    expect(new Set(unreachable)).toEqual(new Set(['dead']));
    expect(t.stats().failed).toBeGreaterThan(0);
    await until('sent counter', () => t.stats().sent === 3, 2000);
  });

  it('a slow peer does not block another', async () => {
    let release!: () => void;
    const released = new Promise<void>((r) => {
      release = r;
    });
    let waiting = 0;
    const slow = await startPeer({
      gate: () => {
        waiting++;
        return released;
      },
    });
    const fast = await startPeer();
    const t = transport({ peers: { slow: slow.url, fast: fast.url } });
    t.send([heartbeat('slow', 1)]);
    await until('slow peer to hold the stream', () => waiting === 1, 2000);
    for (let i = 2; i <= 20; i++) t.send([heartbeat('slow', i)]);
    t.send([heartbeat('fast', 1), heartbeat('fast', 2), heartbeat('fast', 3)]);
    await until('fast peer while the slow one hangs', () => fast.received.length === 3, 1000);
    expect(slow.received).toEqual([]);
    release();
    await until('slow peer after release', () => slow.received.length === 20, 5000);
    expect(slow.received.map((r) => r.msg.commit)).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
  });

  it('keeps what waits for an unreachable peer bounded, dropping the oldest', async () => {
    const unreachable: string[] = [];
    const t = transport({
      peers: { b: await deadUrl() },
      maxQueuedMessages: 5,
      backoffMinMs: 60_000,
      onUnreachable: (p) => unreachable.push(p),
    });
    t.send([heartbeat('b', 1)]);
    await until('the first stream failed', () => unreachable.length === 1, 3000);
    for (let i = 2; i <= 20; i++) t.send([heartbeat('b', i)]);
    expect(t.stats()).toMatchObject({ dropped: 14, queued: 5, failed: 1, failedRequests: 1 });
  });

  it('times out a stream that gets no answer and reports the peer unreachable', async () => {
    const hung = await startPeer({ gate: () => new Promise(() => {}) });
    const unreachable: string[] = [];
    const t = transport({
      peers: { b: hung.url },
      requestTimeoutMs: 200,
      onUnreachable: (p) => unreachable.push(p),
    });
    t.send([heartbeat('b', 1)]);
    await until('timeout report', () => unreachable.length === 1, 3000);
    expect(t.stats()).toMatchObject({ failed: 1, failedRequests: 1, sent: 0 });
  });

  it('sends a MsgSnap on its own request and reports how it went', async () => {
    const b = await startPeer();
    const statuses: [string, boolean][] = [];
    const t = transport({
      peers: { b: b.url, dead: await deadUrl() },
      onSnapshotStatus: (p, ok) => statuses.push([p, ok]),
    });
    t.send([heartbeat('b', 1), snap('b'), heartbeat('b', 2), snap('dead')]);
    await until('snapshot outcomes', () => b.received.length === 3 && statuses.length === 2, 3000);
    const beats = b.received.filter((r) => r.msg.type === 'MsgHeartbeat');
    const snapshot = b.received.find((r) => r.msg.type === 'MsgSnap');
    expect(beats.map((r) => r.msg.commit)).toEqual([1, 2]);
    expect(beats[0]!.request).toBe(beats[1]!.request);
    expect(snapshot!.request).not.toBe(beats[0]!.request);
    expect(new Map(statuses)).toEqual(
      new Map([
        ['b', true],
        ['dead', false],
      ]),
    );
  });

  it('sends a snapshot larger than any other request may be, under its own limit, and drops one over it', async () => {
    // Scaled down: other requests stop at 64 KiB here, snapshots at 1 MiB.
    const b = await startPeer({ maxBodyBytes: 64 * 1024, maxSnapshotBodyBytes: 1024 * 1024, selfId: 'b' });
    const statuses: boolean[] = [];
    const t = transport({
      peers: { b: b.url },
      maxSnapshotBytes: 1024 * 1024,
      onSnapshotStatus: (_p, ok) => statuses.push(ok),
    });
    const large = snap('b');
    large.snapshot!.data = 'x'.repeat(300 * 1024);
    t.send([large]);
    await until('the large snapshot sent', () => statuses.length === 1, 3000);
    expect(statuses).toEqual([true]);
    expect(b.received.map((r) => r.msg.snapshot?.data.length)).toEqual([300 * 1024]);

    const tooLarge = snap('b');
    tooLarge.snapshot!.data = 'x'.repeat(1100 * 1024);
    t.send([tooLarge]);
    await until('the oversized snapshot reported', () => statuses.length === 2, 3000);
    expect(statuses).toEqual([true, false]);
    expect(t.stats().dropped).toBe(1);
    expect(b.received).toHaveLength(1);

    // The larger limit is for one MsgSnap alone, nothing else.
    const marked = (body: string) =>
      fetch(`${b.url}/raft/messages`, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          [CLUSTER_SECRET_HEADER]: SECRET,
          [RAFT_SNAPSHOT_HEADER]: '1',
        },
        body,
      });
    const beat = { ...heartbeat('b', 1), to: 'b', context: 'y'.repeat(100 * 1024) };
    const smuggled = await marked(JSON.stringify({ messages: [beat] }));
    expect(smuggled.status).toBe(400);
    expect((await errorOf(smuggled)).code).toBe('BadMessage');
    const unmarked = await post(b.url, JSON.stringify({ messages: [beat] }));
    expect(unmarked.status).toBe(413);
    expect(b.received).toHaveLength(1);
  });

  it('reports a wrong cluster secret as a failure, and follows setPeer / removePeer', async () => {
    const b = await startPeer();
    const c = await startPeer();
    const unreachable: string[] = [];
    const wrong = transport({
      peers: { b: b.url },
      secret: 'not-the-secret',
      onUnreachable: (p) => unreachable.push(p),
    });
    wrong.send([heartbeat('b', 1)]);
    await until('unreachable on 401', () => unreachable.length === 1, 3000);
    expect(b.received).toEqual([]);

    const t = transport({ peers: {}, onUnreachable: (p) => unreachable.push(p) });
    t.send([heartbeat('b', 1)]);
    await until('unknown peer reported', () => unreachable.length === 2, 1000);
    t.setPeer('b', b.url);
    t.send([heartbeat('b', 2)]);
    await until('b after setPeer', () => b.received.length === 1, 2000);
    t.setPeer('b', c.url);
    t.send([heartbeat('b', 3)]);
    await until('b at its new URL', () => c.received.length === 1, 2000);
    await until('sent counter', () => t.stats().sent === 2, 2000);
    t.removePeer('b');
    t.send([heartbeat('b', 4)]);
    expect(t.stats()).toMatchObject({ sent: 2, dropped: 2 });
    expect(b.received.map((r) => r.msg.commit)).toEqual([2]);
    expect(c.received.map((r) => r.msg.commit)).toEqual([3]);
  });

  it("carries a peer's replies back on the response of our stream, not on a stream of its own", async () => {
    let tb: HttpTransport | null = null;
    const b = await startPeer({
      selfId: 'b',
      onMessage: (msg) =>
        tb!.send([{ type: 'MsgHeartbeatResp', from: 'b', to: 'a', term: 1, commit: msg.commit ?? 0 }]),
      attachReplySink: (from, sink) => tb!.attachReplySink(from, sink),
    });
    const replies: Message[] = [];
    const a = await startPeer({ selfId: 'a' });
    tb = transport({ id: 'b', peers: { a: a.url } });
    const ta = transport({ peers: { b: b.url }, onReply: (msg) => replies.push(msg) });

    for (let i = 1; i <= 3; i++) {
      ta.send([heartbeat('b', i)]);
      await until(`reply ${i} on the stream`, () => replies.length === i, 3000);
    }
    expect(replies.map((r) => [r.type, r.from, r.to, r.commit])).toEqual([
      ['MsgHeartbeatResp', 'b', 'a', 1],
      ['MsgHeartbeatResp', 'b', 'a', 2],
      ['MsgHeartbeatResp', 'b', 'a', 3],
    ]);
    expect(a.requests).toBe(0);
    expect(b.requests).toBe(1);
    expect(tb.stats()).toMatchObject({ sent: 3, queued: 0 });

    // Once a's stream is gone, b's messages for a go on a stream of b's own.
    await ta.close();
    await until(
      'b let go of the closed stream',
      () => {
        tb!.send([{ type: 'MsgHeartbeatResp', from: 'b', to: 'a', term: 1, commit: 9 }]);
        return a.received.length > 0;
      },
      3000,
    );
    expect(a.received[0]!.msg).toMatchObject({ type: 'MsgHeartbeatResp', from: 'b', commit: 9 });
  });
});

describe('replies on a peer stream', () => {
  it('are on the socket when the write returns, not held corked until the next tick', async () => {
    // A follower answers its leader on the leader's stream in the middle of a Ready, which goes on
    // to apply and advance: an answer held back until the next tick waited for all of that.
    let sink: ReplySink | null = null;
    let response: ServerResponse | null = null;
    const server = createServer((req, res) => {
      response = res;
      serveInboundStream(req, res, {
        from: 'a',
        onMessage: () => {},
        attachSink: (_from, s) => {
          sink = s;
          return () => {};
        },
        maxUnsentReplyBytes: 1 << 20,
        idleTimeoutMs: 60_000,
        log: pino({ level: 'silent' }),
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    cleanups.push(async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    });
    const req = httpRequest({
      port: (server.address() as AddressInfo).port,
      host: '127.0.0.1',
      method: 'POST',
      path: RAFT_STREAM_PATH,
    });
    req.on('error', () => {});
    const chunks: Buffer[] = [];
    req.on('response', (res) => res.on('data', (c: Buffer) => chunks.push(c)));
    req.write(encodeMessageFrame(heartbeat('b', 1)));
    await until(
      'the stream taken',
      () => sink !== null && chunks.length === 0 && response!.headersSent,
      3000,
    );
    const reply = encodeMessageFrame({ type: 'MsgHeartbeatResp', from: 'b', to: 'a', term: 1, commit: 1 });
    expect(sink!.write(reply)).toBe(true);
    expect(response!.socket?.writableCorked).toBe(0);
    await until('the reply at the sender', () => Buffer.concat(chunks).includes(reply), 3000);
    req.destroy();
  });
});

describe('HttpTransport reconnect pacing', () => {
  it('backs off from a peer that takes a stream and then refuses a frame on it, not reconnecting at once', async () => {
    const b = await startPeer({ selfId: 'b' });
    const unreachable: string[] = [];
    const t = transport({ peers: { b: b.url }, onUnreachable: (p) => unreachable.push(p) });
    // Each stream opens on a good frame, then ends at a frame whose sender is not the stream's.
    const forged: Message = { ...heartbeat('b', 2), from: 'z' };
    const sending = setInterval(() => t.send([heartbeat('b', 1), forged]), 10);
    cleanups.push(async () => clearInterval(sending));
    await until('the first refusal', () => unreachable.length >= 1, 3000);
    const first = b.requests;
    await new Promise((r) => setTimeout(r, 2000));
    clearInterval(sending);
    // Backing off 50, 100, 200, 400, 800 ms: a handful of streams in 2 s, not one every 50 ms.
    expect(b.requests - first).toBeLessThanOrEqual(8);
    expect(b.requests - first).toBeGreaterThanOrEqual(2);
  });
});

describe('HttpTransport, frames waiting when a peer opens its stream', () => {
  it('sends them on that stream, after its answer headers', async () => {
    let tb: HttpTransport | null = null;
    const b = await startPeer({
      selfId: 'b',
      attachReplySink: (from, sink) => tb!.attachReplySink(from, sink),
    });
    const bUnreachable: string[] = [];
    // b's own stream to a cannot open (nothing listens there) and backs off: its next frame waits.
    tb = transport({
      id: 'b',
      peers: { a: await deadUrl() },
      backoffMinMs: 30_000,
      onUnreachable: (p) => bUnreachable.push(p),
    });
    const fromB = (commit: number): Message => ({
      type: 'MsgHeartbeatResp',
      from: 'b',
      to: 'a',
      term: 1,
      commit,
    });
    tb.send([fromB(1)]);
    await until('b backing off from a', () => bUnreachable.length === 1, 3000);
    tb.send([fromB(2)]);
    expect(tb.stats().queued).toBe(1);
    const replies: Message[] = [];
    const ta = transport({ peers: { b: b.url }, onReply: (msg) => replies.push(msg) });
    ta.send([heartbeat('b', 1)]);
    await until('the waiting frame on a stream', () => replies.length === 1, 3000);
    expect(replies[0]).toMatchObject({ from: 'b', commit: 2 });
    expect(b.received.map((r) => r.msg.commit)).toEqual([1]);
  });
});
