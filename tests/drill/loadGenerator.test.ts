// The drill's load against real HTTP servers on 127.0.0.1: an upload held by a manager that never
// answers (a stopped leader) does not hold the client's next upload, which goes to the next manager,
// so the drill's write-unavailable window is the cluster's and not the request timeout's.

import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { DrillLedger } from '../../src/cli/drill/drillLedger.ts';
import { LoadGenerator } from '../../src/cli/drill/loadGenerator.ts';

const servers: Server[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) {
    s.closeAllConnections();
    await new Promise((r) => s.close(r));
  }
});

async function serve(answer: boolean): Promise<{ url: string; hits: () => number }> {
  let n = 0;
  let hits = 0;
  const server = createServer((req, res) => {
    hits++;
    req.resume();
    req.on('end', () => {
      if (!answer) return;
      res.writeHead(201, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ id: `img-${++n}` }));
    });
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, hits: () => hits };
}

describe('LoadGenerator', () => {
  it("sends a client's next upload to the next manager while one is held by a manager that never answers", async () => {
    const frozen = await serve(false);
    const live = await serve(true);
    const ledger = new DrillLedger();
    // One client, and a request timeout longer than the load runs: only moving on gets an upload in.
    const load = new LoadGenerator(ledger, {
      clients: 1,
      pauseMs: 20,
      requestTimeoutMs: 3_500,
      // The first upload goes to the frozen manager, every later one to the live one.
      targets: () => (frozen.hits() === 0 ? [frozen.url] : [live.url]),
    });
    load.start();
    await new Promise((r) => setTimeout(r, 2_000));
    const ackedWhileHeld = ledger.idsIn('acked').length;
    await load.stop();
    expect(ackedWhileHeld).toBeGreaterThan(0);
    // The held uploads still end in the ledger (timeouts), and stop() waited for them.
    expect(ledger.outcomes.filter((o) => o.op === 'upload' && o.status === 'timeout').length).toBeGreaterThan(
      0,
    );
  });
});
