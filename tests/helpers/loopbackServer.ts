// A plain node:http server on 127.0.0.1 for a test that plays the other end of a connection.

import { createServer, type RequestListener } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface LoopbackServer {
  url: string;
  /** Closes the server and every connection to it, a request still in progress included. */
  close(): Promise<void>;
}

/** Listens on a free port of 127.0.0.1 and answers every request with `handle`. */
export async function listenOnLoopback(handle: RequestListener): Promise<LoopbackServer> {
  const server = createServer(handle);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
