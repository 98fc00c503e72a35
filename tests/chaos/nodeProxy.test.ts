// The proxy on real sockets: a child process fetching through it is told apart from the test's
// own client, so a fault on the child's link leaves other sources alone; heal restores the link.

import { spawn } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NodeProxy } from './nodeProxy.ts';
import { connectionOwner } from './socketOwner.ts';

let target: Server;
let proxy: NodeProxy;
const pids = new Map<string, number>();

/** One fetch through the proxy from a child process named `name`: its body, or ERR, and its time. */
function fetchFromChild(name: string, timeoutMs: number): Promise<{ text: string; ms: number }> {
  const script = `const t=Date.now();fetch(${JSON.stringify(proxy.url)},{signal:AbortSignal.timeout(${timeoutMs})})
    .then(r=>r.text()).then(x=>console.log(x,Date.now()-t)).catch(()=>console.log('ERR',Date.now()-t))`;
  const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  pids.set(name, child.pid!);
  let out = '';
  child.stdout.on('data', (d) => {
    out += d;
  });
  return new Promise((resolve) =>
    child.on('close', () => {
      pids.delete(name);
      const [text = '', ms = '0'] = out.trim().split(' ');
      resolve({ text, ms: Number(ms) });
    }),
  );
}

async function fetchFromTest(): Promise<string> {
  return (await fetch(proxy.url, { signal: AbortSignal.timeout(5_000) })).text();
}

beforeAll(async () => {
  target = createServer((_req, res) => res.end('ok'));
  await new Promise<void>((r) => target.listen(0, '127.0.0.1', () => r()));
  const port = (target.address() as { port: number }).port;
  proxy = await NodeProxy.start('target', port, (c, p) => connectionOwner(c, p, pids));
});

afterAll(async () => {
  await proxy.stop();
  await new Promise((r) => target.close(r));
});

describe('NodeProxy', () => {
  it('forwards traffic from any source while healthy', async () => {
    expect((await fetchFromChild('a', 10_000)).text).toBe('ok');
    expect(await fetchFromTest()).toBe('ok');
  });

  it('drops one source`s requests and keeps serving the others', async () => {
    proxy.set('a', { dropForward: true });
    expect((await fetchFromChild('a', 1_500)).text).toBe('ERR');
    expect((await fetchFromChild('b', 10_000)).text).toBe('ok');
    expect(await fetchFromTest()).toBe('ok');
  });

  it('drops the answers only, one way', async () => {
    proxy.heal();
    proxy.set('a', { dropBackward: true });
    expect((await fetchFromChild('a', 1_500)).text).toBe('ERR');
  });

  it('delays a source`s traffic, and heal() restores it', async () => {
    proxy.heal();
    proxy.set('a', { delayMs: 400 });
    const slow = await fetchFromChild('a', 10_000);
    expect(slow.text).toBe('ok');
    expect(slow.ms).toBeGreaterThanOrEqual(400);
    proxy.heal();
    expect((await fetchFromChild('a', 10_000)).text).toBe('ok');
  });
});
