// The listener a founder keeps while it waits for its peers (foundingWait.ts), over real HTTPS on
// 127.0.0.1: it answers its empty Raft view to a peer's credential only, and it lets go of its port
// at once when the founder goes on, even with a peer's TLS handshake still pending (close() alone
// waited for that handshake, up to its 120 s timeout, while the real server waited for the port).

import { rm } from 'node:fs/promises';
import { connect } from 'node:net';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../../src/cli/localProcess.ts';
import { CLUSTER_SECRET_HEADER } from '../../src/http/clusterAuth.ts';
import { ManagerCredentials } from '../../src/http/credentials.ts';
import { loadTlsFiles, type TlsSettings, useInternalTls } from '../../src/http/tls.ts';
import { createLogger } from '../../src/logging.ts';
import { serveFoundingView } from '../../src/manager/foundingWait.ts';
import { makeTestCa, OPENSSL, type TestCa } from '../helpers/testCa.ts';

const skip = OPENSSL === null;
const SECRET = 'founding-secret-0123456789abcdef';
let ca: TestCa;
let tls: TlsSettings | undefined;

beforeAll(async () => {
  if (skip) return;
  ca = await makeTestCa();
  tls = loadTlsFiles({ certFile: ca.certFile, keyFile: ca.keyFile, caFile: ca.caFile });
  useInternalTls(tls);
});
afterAll(async () => {
  if (ca) await rm(ca.dir, { recursive: true, force: true });
});

describe.skipIf(skip)('a waiting founder listener', () => {
  it('answers its empty view to a peer, and frees its port at once with a TLS handshake pending', async () => {
    const port = await freePort();
    const url = `https://127.0.0.1:${port}`;
    const close = await serveFoundingView({
      selfId: 'm1',
      host: '127.0.0.1',
      port,
      tls,
      peers: { m1: url, m2: 'https://127.0.0.1:1' },
      credentials: ManagerCredentials.singleSecret(SECRET),
      credentialFor: () => SECRET,
      perRole: false,
      log: createLogger('test'),
    });
    const asked = await request(`${url}/v1/cluster/raft`, { headers: { [CLUSTER_SECRET_HEADER]: SECRET } });
    expect(await asked.body.json()).toMatchObject({ id: 'm1', lastIndex: 0, leader: null });
    const refused = await request(`${url}/v1/cluster/raft`);
    await refused.body.dump();
    expect(refused.statusCode).toBe(401);

    // A peer that connected and has not finished (or begun) its handshake.
    const pending = connect(port, '127.0.0.1');
    pending.on('error', () => {});
    await new Promise((r) => pending.once('connect', r));
    const cut = new Promise((r) => pending.once('close', r));
    await close();
    await cut;
    expect(pending.destroyed).toBe(true);
  });
});
