// A peer whose connection hangs (the network drops every byte and closes nothing) must be reported
// unreachable, and the link must come back once the network heals: a TCP proxy on 127.0.0.1 between
// the transport and a real raftRoutes server plays that network.

import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { connect, createServer, type Server as NetServer, type Socket } from 'node:net';
import { serve } from '@hono/node-server';
import { Hono } from 'hono';
import { afterEach, describe, expect, it } from 'vitest';
import { HttpTransport } from '../../src/consensus/transport/httpTransport.ts';
import { raftRoutes } from '../../src/consensus/transport/raftRoutes.ts';
import type { Message } from '../../src/consensus/types.ts';
import { until } from '../helpers/until.ts';

const SECRET = 'test-cluster-secret';
const cleanups: (() => Promise<void> | void)[] = [];

afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

interface Proxy {
  url: string;
  /** From now on every byte on every open connection is dropped, and nothing is closed. */
  partition(): void;
  /** New connections pass again; the partitioned ones stay dead, as after a real outage. */
  heal(): void;
}

async function startProxy(target: string): Promise<Proxy> {
  const { port: targetPort } = new URL(target);
  const open = new Set<{ dead: boolean }>();
  const sockets = new Set<Socket>();
  const server: NetServer = createServer((client) => {
    const link = { dead: false };
    open.add(link);
    const upstream = connect(Number(targetPort), '127.0.0.1');
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('error', () => {});
      s.on('close', () => sockets.delete(s));
    }
    client.on('data', (b) => link.dead || upstream.write(b));
    upstream.on('data', (b) => link.dead || client.write(b));
    // A close crosses only a live link: across a partition the other end never hears of it.
    client.on('close', () => link.dead || upstream.destroy());
    upstream.on('close', () => link.dead || client.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(async () => {
    for (const s of sockets) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  let partitioned = false;
  server.on('connection', (client) => {
    if (partitioned) client.destroy();
  });
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    partition: () => {
      partitioned = true;
      for (const link of open) link.dead = true;
    },
    heal: () => {
      partitioned = false;
    },
  };
}

async function startNode(
  id: string,
  onMessage: (msg: Message) => void,
  attach: (from: string, sink: Parameters<HttpTransport['attachReplySink']>[1]) => (() => void) | null,
  transport: () => HttpTransport | null,
): Promise<string> {
  const app = new Hono();
  app.route(
    '/',
    raftRoutes({
      secret: SECRET,
      selfId: id,
      onMessage,
      attachReplySink: attach,
      idleTimeoutMs: 1000,
      // As a manager wires it: what the node's transport heard from the peer counts too.
      peerHeard: {
        note: (from) => transport()?.noteHeard(from),
        count: (from) => transport()?.heardCount(from) ?? 0,
      },
    }),
  );
  const server = await new Promise<Server>((resolve) => {
    const s = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, () => resolve(s as Server));
  });
  cleanups.push(async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

function beat(from: string, to: string, commit: number, type: Message['type'] = 'MsgHeartbeat'): Message {
  return { type, from, to, term: 1, commit };
}

describe('HttpTransport across a network that drops bytes without closing', () => {
  it('reports the peer unreachable on both ends, and the link comes back after the partition heals', async () => {
    let ta: HttpTransport | null = null;
    let tb: HttpTransport | null = null;
    const unreachable: string[] = [];
    const fromB: Message[] = [];
    let bDetached = 0;
    // a sends heartbeats to b through the proxy; b answers each on a's stream, and also sends its
    // own heartbeats there, which a answers: traffic both ways, as between a leader and a follower.
    const bUrl = await startNode(
      'b',
      (msg) => {
        if (msg.type === 'MsgHeartbeat') tb!.send([beat('b', 'a', msg.commit ?? 0, 'MsgHeartbeatResp')]);
      },
      (from, sink) => {
        const detach = tb!.attachReplySink(from, sink);
        return () => {
          bDetached++;
          detach?.();
        };
      },
      () => tb,
    );
    const aUrl = await startNode(
      'a',
      () => {},
      () => () => {},
      () => null,
    );
    const proxy = await startProxy(bUrl);
    tb = new HttpTransport({ id: 'b', secret: SECRET, peers: { a: aUrl }, idleTimeoutMs: 1000 });
    ta = new HttpTransport({
      id: 'a',
      secret: SECRET,
      peers: { b: proxy.url },
      idleTimeoutMs: 1000,
      onUnreachable: (peer) => unreachable.push(peer),
      onReply: (msg) => {
        fromB.push(msg);
        if (msg.type === 'MsgHeartbeat') ta!.send([beat('a', 'b', msg.commit ?? 0, 'MsgHeartbeatResp')]);
      },
    });
    cleanups.push(() => tb!.close());
    cleanups.push(() => ta!.close());
    let n = 0;
    const beats = setInterval(() => {
      n++;
      ta!.send([beat('a', 'b', n)]);
      tb!.send([beat('b', 'a', n)]);
    }, 50);
    cleanups.push(() => clearInterval(beats));

    await until('answers from b', () => fromB.some((m) => m.type === 'MsgHeartbeatResp'), 5000);
    await new Promise((r) => setTimeout(r, 1000));
    expect(unreachable).toEqual([]);
    proxy.partition();
    await until('b reported unreachable', () => unreachable.includes('b'), 8000);
    await until("b let go of a's dead stream", () => bDetached > 0, 8000);

    proxy.heal();
    const heard = fromB.length;
    await until(
      'answers from b again',
      () => fromB.slice(heard).some((m) => m.type === 'MsgHeartbeatResp'),
      8000,
    );
  }, 30_000);
});
