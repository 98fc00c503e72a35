// What an operator's Prometheus sees, on real processes: three managers and three workers scraped
// after an upload and downloads. The series `imgvault status`, deploy/grafana-dashboard.json and
// docs/metrics.md rely on exist with sane values, and the dashboard and the docs name exactly the
// series the processes expose, so neither can drift from the code.

import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLUSTER_SECRET_HEADER } from '../../src/http/clusterAuth.ts';
import { ImageCluster, type ManagerProc, pngImage, runCli, until } from './imageCluster.ts';

interface Sample {
  labels: Record<string, string>;
  value: number;
}

interface Family {
  type: string;
  samples: Sample[];
}

type Scrape = Map<string, Family>;

const ROOT = new URL('../../', import.meta.url);
const IMAGE_BYTES = 4096;
/** prom-client's process and runtime metrics: documented as a group, not one by one. */
const DEFAULT_METRIC = /^(imgvault_worker_)?(process_|nodejs_)/;

function parseLabels(text: string | undefined): Record<string, string> {
  const labels: Record<string, string> = {};
  for (const m of (text ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g))
    labels[m[1] as string] = m[2] as string;
  return labels;
}

/** The Prometheus text format: `# TYPE` names a family; histogram samples carry a suffix. */
function parseExposition(text: string): Scrape {
  const families: Scrape = new Map();
  for (const line of text.split('\n')) {
    const type = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (type) {
      families.set(type[1] as string, { type: type[2] as string, samples: [] });
      continue;
    }
    const sample = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!sample) continue;
    const name = sample[1] as string;
    const family = families.get(name) ?? families.get(name.replace(/_(bucket|sum|count)$/, ''));
    family?.samples.push({ labels: { ...parseLabels(sample[2]), __name__: name }, value: Number(sample[3]) });
  }
  return families;
}

async function scrape(url: string, secret?: string): Promise<Scrape> {
  const res = await fetch(`${url}/metrics`, {
    headers: secret ? { [CLUSTER_SECRET_HEADER]: secret } : {},
    signal: AbortSignal.timeout(5_000),
  });
  if (res.status !== 200) throw new Error(`${url}/metrics answered ${res.status}`);
  return parseExposition(await res.text());
}

/** The value of the one sample of `name` whose labels include `labels`; undefined if none. */
function value(s: Scrape, name: string, labels: Record<string, string> = {}): number | undefined {
  const base = name.replace(/_(bucket|sum|count)$/, '');
  const family = s.get(name) ?? s.get(base);
  const matching = family?.samples.filter(
    (x) => x.labels.__name__ === name && Object.entries(labels).every(([k, v]) => x.labels[k] === v),
  );
  if (!matching || matching.length === 0) return undefined;
  if (matching.length > 1) throw new Error(`${name} ${JSON.stringify(labels)} matches several samples`);
  return matching[0]?.value;
}

let cluster: ImageCluster;
let leader: ManagerProc;
let follower: ManagerProc;
let image: { id: string; replicas: string[] };

async function scrapeManagers(): Promise<Map<string, Scrape>> {
  return new Map(await Promise.all(cluster.managers.map(async (m) => [m.id, await scrape(m.url)] as const)));
}

async function scrapeWorkers(): Promise<Map<string, Scrape>> {
  return new Map(
    await Promise.all(cluster.workers.map(async (w) => [w.id, await scrape(w.url, cluster.secret)] as const)),
  );
}

async function download(m: ManagerProc): Promise<void> {
  const res = await fetch(`${m.url}/v1/images/${image.id}`, { signal: AbortSignal.timeout(10_000) });
  expect(res.status).toBe(200);
  expect((await res.arrayBuffer()).byteLength).toBe(IMAGE_BYTES);
}

beforeAll(async () => {
  cluster = await ImageCluster.start({ name: 'metrics' });
  leader = await cluster.leader();
  follower = (await cluster.followers())[0] as ManagerProc;
  const res = await fetch(`${leader.url}/v1/images`, {
    method: 'POST',
    body: new Blob([pngImage(IMAGE_BYTES)]),
    signal: AbortSignal.timeout(10_000),
  });
  expect(res.status).toBe(201);
  image = (await res.json()) as typeof image;
  await download(leader);
  await download(follower);
}, 120_000);

afterAll(async () => {
  await cluster?.close();
});

describe('what every manager reports', () => {
  it('counts the upload on the leader: outcome, bytes and its latency', async () => {
    const s = await scrape(leader.url);
    expect(value(s, 'imgvault_uploads_total', { outcome: 'created' })).toBeGreaterThanOrEqual(1);
    expect(value(s, 'imgvault_upload_bytes_total')).toBeGreaterThanOrEqual(IMAGE_BYTES);
    expect(value(s, 'imgvault_upload_duration_seconds_count', { outcome: 'created' })).toBeGreaterThanOrEqual(
      1,
    );
    expect(value(s, 'imgvault_upload_duration_seconds_sum', { outcome: 'created' })).toBeGreaterThan(0);
    for (const phase of ['stage', 'replicate', 'commit']) {
      expect(value(s, 'imgvault_upload_phase_seconds_count', { phase })).toBeGreaterThanOrEqual(1);
    }
  });

  it('counts each download where it was served, with its latency and its bytes once sent', async () => {
    for (const m of [leader, follower]) {
      // The bytes are counted when the body has been sent to the end, just after the response.
      const s = await until(
        `download bytes on ${m.id}`,
        async () => {
          const x = await scrape(m.url);
          return (value(x, 'imgvault_download_bytes_total') ?? 0) >= IMAGE_BYTES ? x : null;
        },
        10_000,
      );
      expect(value(s, 'imgvault_downloads_total', { outcome: 'ok' })).toBeGreaterThanOrEqual(1);
      expect(value(s, 'imgvault_download_duration_seconds_count', { outcome: 'ok' })).toBeGreaterThanOrEqual(
        1,
      );
    }
  });

  it('agrees on the term and the leader; commit never trails applied, nor the log the commit', async () => {
    const scrapes = await until(
      'every manager at the same term and applied index',
      async () => {
        const all = await scrapeManagers();
        const terms = new Set([...all.values()].map((s) => value(s, 'imgvault_raft_term')));
        const applied = new Set([...all.values()].map((s) => value(s, 'imgvault_raft_applied_index')));
        return terms.size === 1 && applied.size === 1 ? all : null;
      },
      20_000,
    );
    const leaders = [...scrapes].filter(([, s]) => value(s, 'imgvault_raft_is_leader') === 1);
    expect(leaders.map(([id]) => id)).toEqual([leader.id]);
    for (const [id, s] of scrapes) {
      const at = (name: string) => value(s, name) ?? Number.NaN;
      expect(at('imgvault_raft_term'), id).toBeGreaterThanOrEqual(1);
      expect(at('imgvault_raft_applied_index'), id).toBeGreaterThanOrEqual(1);
      expect(at('imgvault_raft_commit_index'), id).toBeGreaterThanOrEqual(at('imgvault_raft_applied_index'));
      expect(at('imgvault_raft_last_index'), id).toBeGreaterThanOrEqual(at('imgvault_raft_commit_index'));
      expect(at('imgvault_raft_snapshot_index'), id).toBeLessThanOrEqual(at('imgvault_raft_applied_index'));
      expect(at('imgvault_raft_leader_changes_total'), id).toBeGreaterThanOrEqual(1);
      expect(at('imgvault_raft_proposals_pending'), id).toBeGreaterThanOrEqual(0);
      expect(s.get('imgvault_raft_proposals_dropped_total')?.type, id).toBe('counter');
    }
  });

  it('reports the same cluster totals and per-worker state and disk from the replicated tables', async () => {
    for (const m of cluster.managers) {
      const s = await until(
        `${m.id} to have applied the upload and a usage summary`,
        async () => {
          const x = await scrape(m.url);
          const reported = cluster.workers.every(
            (w) => (value(x, 'imgvault_cluster_worker_disk_free_bytes', { worker: w.id }) ?? 0) > 0,
          );
          return value(x, 'imgvault_cluster_objects') === 1 && reported ? x : null;
        },
        20_000,
      );
      expect(value(s, 'imgvault_cluster_object_bytes'), m.id).toBe(IMAGE_BYTES);
      for (const w of cluster.workers) {
        expect(value(s, 'imgvault_cluster_worker_state', { worker: w.id, state: 'up' }), m.id).toBe(1);
        expect(value(s, 'imgvault_cluster_worker_state', { worker: w.id, state: 'down' }), m.id).toBe(0);
        expect(value(s, 'imgvault_cluster_worker_disk_used_bytes', { worker: w.id }), m.id).toBeGreaterThan(
          0,
        );
      }
    }
  });

  it('has nothing under-replicated or unavailable on a healthy cluster', async () => {
    const s = await scrape(leader.url);
    expect(value(s, 'imgvault_objects_under_replicated')).toBe(0);
    expect(value(s, 'imgvault_objects_unavailable')).toBe(0);
    expect(value(s, 'imgvault_repairs_started_total')).toBe(0);
  });
});

describe('what every worker reports', () => {
  it('holds the copies it was given, with their bytes, and the disk under them', async () => {
    const scrapes = await scrapeWorkers();
    let sent = 0;
    for (const [id, s] of scrapes) {
      const holds = image.replicas.includes(id);
      expect(value(s, 'imgvault_worker_blobs'), id).toBe(holds ? 1 : 0);
      expect(value(s, 'imgvault_worker_blob_bytes'), id).toBe(holds ? IMAGE_BYTES : 0);
      if (holds)
        expect(value(s, 'imgvault_worker_bytes_received_total'), id).toBeGreaterThanOrEqual(IMAGE_BYTES);
      const total = value(s, 'imgvault_worker_disk_total_bytes') ?? 0;
      const free = value(s, 'imgvault_worker_disk_free_bytes') ?? -1;
      expect(total, id).toBeGreaterThan(0);
      expect(free, id).toBeGreaterThan(0);
      expect(free, id).toBeLessThanOrEqual(total);
      sent += value(s, 'imgvault_worker_bytes_sent_total') ?? 0;
    }
    // Two downloads, each served by one of the two holders.
    expect(sent).toBeGreaterThanOrEqual(2 * IMAGE_BYTES);
  });

  it('answers /metrics only with the cluster secret; a manager answers it openly', async () => {
    const worker = cluster.workers[0];
    if (!worker) throw new Error('no worker');
    const refused = await fetch(`${worker.url}/metrics`, { signal: AbortSignal.timeout(5_000) });
    expect(refused.status).toBe(401);
    const open = await fetch(`${leader.url}/metrics`, { signal: AbortSignal.timeout(5_000) });
    expect(open.status).toBe(200);
  });
});

/** Every family any process exposes, by name. */
async function everyFamily(): Promise<Map<string, Family>> {
  const all = new Map<string, Family>();
  for (const s of [...(await scrapeManagers()).values(), ...(await scrapeWorkers()).values()]) {
    for (const [name, family] of s) {
      const known = all.get(name);
      if (known) known.samples.push(...family.samples);
      else all.set(name, { type: family.type, samples: [...family.samples] });
    }
  }
  return all;
}

/** Metric names in a PromQL expression: identifiers that are not label names, functions or keywords. */
function metricNames(expr: string): string[] {
  const withoutLabels = expr.replace(/\{[^}]*\}/g, '').replace(/\b(by|without)\s*\([^)]*\)/g, '');
  return [...withoutLabels.matchAll(/\b(imgvault_\w+|process_\w+|nodejs_\w+)\b/g)].map((m) => m[1] as string);
}

function collectExprs(node: unknown, out: string[] = []): string[] {
  if (Array.isArray(node)) for (const x of node) collectExprs(x, out);
  else if (node !== null && typeof node === 'object') {
    for (const [k, v] of Object.entries(node)) {
      if (k === 'expr' && typeof v === 'string') out.push(v);
      else collectExprs(v, out);
    }
  }
  return out;
}

/** The rows of docs/metrics.md's tables: `| \`name\` | type | \`label\`, ... | meaning |`. */
function documentedSeries(doc: string): Map<string, { type: string; labels: string[] }> {
  const rows = new Map<string, { type: string; labels: string[] }>();
  for (const m of doc.matchAll(/^\| `(imgvault_\w+)` \| (\w+) \| ([^|]*) \|/gm)) {
    const labels = [...(m[3] as string).matchAll(/`(\w+)`/g)].map((l) => l[1] as string);
    rows.set(m[1] as string, { type: m[2] as string, labels });
  }
  return rows;
}

describe('deploy/ and docs/ match the code', () => {
  it('the Grafana dashboard queries only series some process exposes', async () => {
    const families = await everyFamily();
    const dashboard = JSON.parse(await readFile(new URL('deploy/grafana-dashboard.json', ROOT), 'utf8'));
    const exprs = collectExprs(dashboard.panels);
    expect(exprs.length).toBeGreaterThan(10);
    expect(new Set(exprs.flatMap(metricNames)).size).toBeGreaterThan(20);
    const unknown = exprs.flatMap(metricNames).filter((name) => {
      const family = families.get(name) ?? families.get(name.replace(/_(bucket|sum|count)$/, ''));
      return family === undefined || (family.type !== 'histogram' && !families.has(name));
    });
    expect([...new Set(unknown)]).toEqual([]);
  });

  it('the dashboard groups and selects only by labels the series or deploy/prometheus.yml carry', async () => {
    const families = await everyFamily();
    const config = await readFile(new URL('deploy/prometheus.yml', ROOT), 'utf8');
    const known = new Set(['le', 'job', 'instance']);
    for (const m of config.matchAll(/labels: \{ (\w+):/g)) known.add(m[1] as string);
    for (const f of families.values()) {
      for (const s of f.samples) for (const l of Object.keys(s.labels)) known.add(l);
    }
    // A labelled series with no event yet has no sample: its labels are those docs/metrics.md declares.
    for (const row of documentedSeries(await readFile(new URL('docs/metrics.md', ROOT), 'utf8')).values()) {
      for (const l of row.labels) known.add(l);
    }
    const dashboard = JSON.parse(await readFile(new URL('deploy/grafana-dashboard.json', ROOT), 'utf8'));
    const used = new Set<string>();
    for (const expr of collectExprs(dashboard.panels)) {
      for (const m of expr.matchAll(/\b(?:by|without)\s*\(([^)]*)\)/g)) {
        for (const l of (m[1] as string).split(',')) used.add(l.trim());
      }
      for (const m of expr.matchAll(/\{([^}]*)\}/g)) {
        for (const l of (m[1] as string).matchAll(/(\w+)\s*=~?/g)) used.add(l[1] as string);
      }
    }
    const legends = JSON.stringify(dashboard.panels).matchAll(/\{\{(\w+)\}\}/g);
    for (const m of legends) used.add(m[1] as string);
    expect(known.has('id')).toBe(true);
    expect([...used].filter((l) => !known.has(l))).toEqual([]);
  });

  it('the dashboard is one importable Grafana dashboard: unique panel ids, a grid position, a query each', async () => {
    const dashboard = JSON.parse(await readFile(new URL('deploy/grafana-dashboard.json', ROOT), 'utf8'));
    expect(typeof dashboard.title).toBe('string');
    expect(typeof dashboard.uid).toBe('string');
    expect(dashboard.schemaVersion).toBeGreaterThanOrEqual(36);
    const panels = dashboard.panels as {
      id: number;
      type: string;
      gridPos: object;
      targets?: { expr: string; refId: string }[];
    }[];
    expect(new Set(panels.map((p) => p.id)).size).toBe(panels.length);
    for (const p of panels) {
      expect(p.gridPos, `panel ${p.id}`).toMatchObject({ x: expect.any(Number), y: expect.any(Number) });
      if (p.type === 'row') continue;
      expect(p.targets?.length, `panel ${p.id}`).toBeGreaterThan(0);
      for (const t of p.targets ?? []) expect(t.refId, `panel ${p.id}`).toMatch(/^[A-Z]$/);
    }
  });

  it('docs/metrics.md lists every series the processes expose, with its type and labels, and no other', async () => {
    const families = await everyFamily();
    const rows = documentedSeries(await readFile(new URL('docs/metrics.md', ROOT), 'utf8'));
    const exposed = [...families.keys()].filter((name) => !DEFAULT_METRIC.test(name)).sort();
    expect([...rows.keys()].sort()).toEqual(exposed);
    for (const name of exposed) {
      const family = families.get(name) as Family;
      const row = rows.get(name);
      expect(row?.type, name).toBe(family.type);
      // A labelled family has no sample until its first event: its labels are checked once it has.
      if (family.samples.length === 0) continue;
      const seen = new Set(family.samples.flatMap((s) => Object.keys(s.labels)));
      for (const internal of ['__name__', 'le']) seen.delete(internal);
      expect(row?.labels.slice().sort(), name).toEqual([...seen].sort());
    }
  });

  it('deploy/prometheus.yml scrapes every process of `imgvault cluster` at its default ports', async () => {
    const help = await runCli(['cluster', '--help']);
    const basePort = Number(/--base-port <port>[\s\S]*?\(default:\s+"(\d+)"\)/.exec(help.stdout)?.[1]);
    const workerPort = Number(
      /--worker-base-port <port>[\s\S]*?\(default:\s+"(\d+)"\)/.exec(help.stdout)?.[1],
    );
    expect(basePort).toBeGreaterThan(0);
    expect(workerPort).toBeGreaterThan(0);
    const config = await readFile(fileURLToPath(new URL('deploy/prometheus.yml', ROOT)), 'utf8');
    const targets = [...config.matchAll(/["']127\.0\.0\.1:(\d+)["']/g)].map((m) => Number(m[1])).sort();
    const expected = [0, 1, 2].flatMap((i) => [basePort + i, workerPort + i]).sort();
    expect(targets).toEqual(expected);
    expect(config).toContain(`${CLUSTER_SECRET_HEADER}:`);
    expect(config).toContain('data/credentials/worker-w1/metrics.credential');
  });
});
