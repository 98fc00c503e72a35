// A loopback TCP proxy in front of one manager or worker: the process listens on a private port,
// and every other process (and every client) reaches it through this proxy's port, its one
// advertised URL. Each connection is attributed to the process that opened it (socketOwner.ts),
// so the nemesis can cut, delay or drop the traffic of one (source, destination) pair and leave
// the others alone. Only 127.0.0.1 is ever listened on or connected to.
//
// The two directions of a connection are filtered apart: `forward` is what the connecting side
// sends (requests), `backward` what this process answers (responses). A dropped direction loses
// its bytes silently (the sender sees a stall, as with lost packets, not a reset). A connection
// that lost any byte is broken at the HTTP level, so heal() closes those and clients reconnect.

import { createServer, type Server, Socket } from 'node:net';

export interface LinkFaults {
  dropForward: boolean;
  dropBackward: boolean;
  /** Added to every chunk in both directions, order kept. */
  delayMs: number;
}

const HEALTHY: LinkFaults = { dropForward: false, dropBackward: false, delayMs: 0 };

/** Names the process that opened a connection from 127.0.0.1:port; null when unknown. */
export type Identify = (clientPort: number, proxyPort: number) => Promise<string | null>;

interface Conn {
  source: string | null;
  client: Socket;
  upstream: Socket;
  tainted: boolean;
}

export class NodeProxy {
  /** Faults by source process name. */
  private readonly faults = new Map<string, LinkFaults>();
  private readonly conns = new Set<Conn>();

  private constructor(
    readonly name: string,
    private readonly server: Server,
    readonly port: number,
    readonly targetPort: number,
    private readonly identify: Identify,
  ) {}

  /** Listens on a kernel-chosen 127.0.0.1 port and forwards to 127.0.0.1:`targetPort`. */
  static async start(name: string, targetPort: number, identify: Identify): Promise<NodeProxy> {
    const server = createServer({ pauseOnConnect: true });
    const port = await new Promise<number>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve((server.address() as { port: number }).port));
    });
    const proxy = new NodeProxy(name, server, port, targetPort, identify);
    server.on('connection', (client) => {
      proxy.accept(client).catch(() => client.destroy());
    });
    return proxy;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Sets (merges) the faults on traffic from `source` to this process. */
  set(source: string, faults: Partial<LinkFaults>): void {
    this.faults.set(source, { ...this.faultsFrom(source), ...faults });
  }

  faultsFrom(source: string | null): LinkFaults {
    return (source !== null && this.faults.get(source)) || HEALTHY;
  }

  /** Back to clean links from every source; connections that lost bytes are closed. */
  heal(): void {
    this.faults.clear();
    for (const c of this.conns) if (c.tainted) this.close(c);
  }

  /** Back to a clean link from `source`; its connections that lost bytes are closed. */
  clear(source: string): void {
    this.faults.delete(source);
    for (const c of this.conns) if (c.tainted && c.source === source) this.close(c);
  }

  /** Closes every open connection at once. */
  resetAll(): void {
    for (const c of this.conns) this.close(c);
  }

  async stop(): Promise<void> {
    this.resetAll();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private async accept(client: Socket): Promise<void> {
    const source = await this.identify(client.remotePort ?? 0, this.port);
    const upstream = new Socket();
    const conn: Conn = { source, client, upstream, tainted: false };
    this.conns.add(conn);
    const end = () => this.close(conn);
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
    upstream.connect(this.targetPort, '127.0.0.1');
    this.pipe(conn, client, upstream, 'dropForward');
    this.pipe(conn, upstream, client, 'dropBackward');
    client.resume();
  }

  /** Forwards `from` to `to` chunk by chunk, each through the faults in force when it arrived. */
  private pipe(conn: Conn, from: Socket, to: Socket, drop: 'dropForward' | 'dropBackward'): void {
    let chain = Promise.resolve();
    from.on('data', (chunk: Buffer) => {
      const faults = this.faultsFrom(conn.source);
      if (faults[drop]) {
        conn.tainted = true;
        return;
      }
      if (faults.delayMs <= 0) {
        chain = chain.then(() => write(to, chunk));
        return;
      }
      // Pausing while a chunk waits keeps memory bounded and the chunks in order.
      from.pause();
      chain = chain
        .then(() => new Promise((r) => setTimeout(r, faults.delayMs)))
        .then(() => {
          write(to, chunk);
          from.resume();
        });
    });
    from.on('end', () => {
      chain = chain.then(() => {
        if (!to.destroyed) to.end();
      });
    });
  }

  private close(conn: Conn): void {
    if (!this.conns.delete(conn)) return;
    conn.client.destroy();
    conn.upstream.destroy();
  }
}

function write(to: Socket, chunk: Buffer): void {
  if (!to.destroyed) to.write(chunk);
}
