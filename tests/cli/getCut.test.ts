// `imgvault get` whose download is cut after its 200 (the manager cuts the connection when a copy
// fails its check as it is sent; the worker drops that copy, so the next read gets the other):
// into a file it is fetched again whole, on standard output it fails saying so. The CLI as a user
// runs it, against a real HTTP server on 127.0.0.1 standing in for the manager.

import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../integration/imageCluster.ts';

const IMAGE = randomBytes(200_000);
let server: Server;
let url: string;
let dir: string;
/** How many of the next answers are cut after their first bytes. */
let cutsLeft = 0;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'get-cut-'));
  server = createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'image/png', 'content-length': String(IMAGE.length) });
    if (cutsLeft > 0) {
      cutsLeft--;
      res.write(IMAGE.subarray(0, 65_536), () => res.socket?.destroy());
    } else res.end(IMAGE);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
  await rm(dir, { recursive: true, force: true });
});

describe('imgvault get of a download cut short', () => {
  it('into a file: fetches it again and writes the whole image, no partial file left', async () => {
    cutsLeft = 1;
    const out = join(dir, 'whole.png');
    const run = await runCli(['get', 'img1', '-o', out, '--url', url]);
    expect(run.stderr).toContain('the download was cut after');
    expect(run.code).toBe(0);
    expect((await readFile(out)).equals(IMAGE)).toBe(true);
    expect((await readdir(dir)).filter((f) => f.endsWith('.part'))).toEqual([]);
  });

  it('into a file cut every time: fails after its attempts, leaving no file', async () => {
    cutsLeft = 3;
    const out = join(dir, 'never.png');
    const run = await runCli(['get', 'img1', '-o', out, '--url', url]);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/the download was cut after \d+ bytes .*, 3 times/);
    expect(await readdir(dir)).not.toContain('never.png');
  });

  it('on standard output: fails saying the download was cut', async () => {
    cutsLeft = 1;
    const run = await runCli(['get', 'img1', '--url', url]);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/the download was cut after \d+ bytes .*: run it again/);
  });
});
