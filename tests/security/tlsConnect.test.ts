// The process-wide internal trust (src/http/tls.ts) as a manager or worker serving TLS sets it:
// every kind of internal client (undici's request, Node's fetch, an Agent or Pool built with
// internalConnect) reaches an https server signed by the CA, and none sends a byte to a plain-http
// server. The trust is global, so this file holds nothing else.

import { rm } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { serve } from '@hono/node-server';
import { Hono } from 'hono';
import { Agent, Pool, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { httpsServeOptions, internalConnect, loadTlsFiles, useInternalTls } from '../../src/http/tls.ts';
import { makeTestCa, OPENSSL, type TestCa } from '../helpers/testCa.ts';

const skip = OPENSSL === null ? 'no openssl command on this machine to make a test CA' : false;

let ca: TestCa;
let servers: ReturnType<typeof serve>[] = [];
let httpsUrl: string;
let plainUrl: string;
let plainRequests = 0;

async function listen(options: object): Promise<string> {
  const app = new Hono();
  app.get('/hello', (c) => c.text('hello'));
  const server = serve({ fetch: app.fetch, hostname: '127.0.0.1', port: 0, ...options });
  await new Promise<void>((resolve) => server.once('listening', () => resolve()));
  servers.push(server);
  return `127.0.0.1:${(server.address() as AddressInfo).port}`;
}

beforeAll(async () => {
  if (skip) return;
  ca = await makeTestCa();
  const settings = loadTlsFiles(ca);
  httpsUrl = `https://${await listen(httpsServeOptions(settings))}`;
  plainUrl = `http://${await listen({})}`;
  // Counts connections, not requests: a refused call must not even connect.
  servers[1]!.on('connection', () => {
    plainRequests += 1;
  });
  useInternalTls(settings);
}, 60_000);

afterAll(async () => {
  for (const s of servers) s.close();
  servers = [];
  if (ca) await rm(ca.dir, { recursive: true, force: true });
});

async function settle(call: () => Promise<string>): Promise<string> {
  try {
    return await call();
  } catch (err) {
    const e = err as { name?: string; cause?: { name?: string } };
    return e.cause?.name ?? e.name ?? String(err);
  }
}

describe.skipIf(skip)(`internal calls with TLS on (${skip || 'openssl'})`, () => {
  it("undici's request and Node's fetch trust the CA and refuse plain http", async () => {
    expect(await settle(async () => (await request(`${httpsUrl}/hello`)).body.text())).toBe('hello');
    expect(await settle(async () => (await fetch(`${httpsUrl}/hello`)).text())).toBe('hello');
    expect(await settle(async () => (await request(`${plainUrl}/hello`)).body.text())).toBe(
      'PlainHttpRefused',
    );
    expect(await settle(async () => (await fetch(`${plainUrl}/hello`)).text())).toBe('PlainHttpRefused');
    expect(plainRequests).toBe(0);
  });

  it('an Agent or a Pool built with internalConnect does the same', async () => {
    const agent = new Agent({ connect: internalConnect({ timeout: 2_000 }) });
    const viaAgent = (url: string) =>
      settle(async () => (await request(url, { dispatcher: agent })).body.text());
    expect(await viaAgent(`${httpsUrl}/hello`)).toBe('hello');
    expect(await viaAgent(`${plainUrl}/hello`)).toBe('PlainHttpRefused');
    await agent.close();
    const httpsPool = new Pool(httpsUrl, { connections: 1, connect: internalConnect({ timeout: 2_000 }) });
    expect(
      await settle(async () => (await httpsPool.request({ method: 'GET', path: '/hello' })).body.text()),
    ).toBe('hello');
    await httpsPool.close();
    const plainPool = new Pool(plainUrl, { connections: 1, connect: internalConnect({ timeout: 2_000 }) });
    expect(
      await settle(async () => (await plainPool.request({ method: 'GET', path: '/hello' })).body.text()),
    ).toBe('PlainHttpRefused');
    await plainPool.destroy();
    expect(plainRequests).toBe(0);
  });
});
