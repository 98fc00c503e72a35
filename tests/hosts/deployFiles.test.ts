// deploy/ holds one deployment written five ways: the example env files, the systemd units (which
// hosts.test.ts runs in network namespaces), the Dockerfile, compose.yaml and the Kubernetes
// manifests. No container engine or cluster runs here, so these checks hold the others to what the
// namespace test runs: the same program and role, only variables the command reads, the example's
// values wherever a host does not differ, the data where IMGVAULT_DATA says, /healthz on the
// listen port, and per-role credentials: each process gets only its own folder of `imgvault
// credentials init` at IMGVAULT_CREDENTIALS_DIR, and no file falls back to the single cluster
// secret. Plain text reading (no YAML library): the files are ours and kept regular.

import { execFileSync, spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { MANAGER_ENV } from '../../src/manager/managerConfig.ts';

const REPO = fileURLToPath(new URL('../..', import.meta.url));
const read = (path: string) => readFileSync(join(REPO, path), 'utf8');
const CLI = join(REPO, 'bin/imgvault.js');

/** The folder every process finds its credentials in (the env examples' IMGVAULT_CREDENTIALS_DIR). */
const CREDENTIALS_DIR = '/etc/imgvault/credentials';
/** The single-secret mode's variables and file: none of the deploy files may use them. */
const SINGLE_SECRET = /IMGVAULT_CLUSTER_SECRET|cluster-secret/;
const DEPLOY_FILES = [
  'deploy/manager.env.example',
  'deploy/worker.env.example',
  'deploy/imgvault-manager.service',
  'deploy/imgvault-worker.service',
  'deploy/compose.yaml',
  'deploy/hosts-demo.sh',
  'deploy/k8s/kustomization.yaml',
  'deploy/k8s/manager.yaml',
  'deploy/k8s/worker.yaml',
];

/** Runs `imgvault credentials init` into `dir`, as the operator does (deploy/README.md). */
function credentialsInit(dir: string, managers: string[], workers: string[]): void {
  execFileSync(
    CLI,
    ['credentials', 'init', '--dir', dir, '--managers', managers.join(','), '--workers', workers.join(',')],
    { stdio: 'pipe', timeout: 60_000 },
  );
}

type Role = 'manager' | 'worker';
const ROLES: Role[] = ['manager', 'worker'];

/** KEY=VALUE lines, # comments: what systemd's EnvironmentFile= and compose's env_file= read. */
function envFile(role: Role): Map<string, string> {
  const vars = new Map<string, string>();
  for (const line of read(`deploy/${role}.env.example`).split('\n')) {
    const m = /^([A-Z0-9_]+)=(.*)$/.exec(line);
    if (m) vars.set(m[1]!, m[2]!);
  }
  return vars;
}

/** The variables each command reads, from its configuration module. */
function varsRead(role: Role): Set<string> {
  if (role === 'manager') return new Set(Object.values(MANAGER_ENV));
  const pattern = /'(IMGVAULT_[A-Z0-9_]+)'/g;
  return new Set([...read('src/storagenode/workerConfig.ts').matchAll(pattern)].map((m) => m[1]!));
}

/** Keys whose values name this very host (or its peers by host name): the rest are the same everywhere. */
const HOST_KEYS: Record<Role, string[]> = {
  manager: ['IMGVAULT_MANAGER_ID', 'IMGVAULT_MANAGER_URL', 'IMGVAULT_PEERS'],
  worker: ['IMGVAULT_WORKER_ID', 'IMGVAULT_ADVERTISE_URL', 'IMGVAULT_MANAGERS', 'IMGVAULT_ZONE'],
};

const LISTEN_KEY: Record<Role, string> = { manager: 'IMGVAULT_MANAGER_LISTEN', worker: 'IMGVAULT_LISTEN' };
const listenPort = (role: Role) => envFile(role).get(LISTEN_KEY[role])!.split(':').pop()!;

/** The unit's ExecStart=, split into the program and its arguments. */
function unitCommand(role: Role): string[] {
  const line = read(`deploy/imgvault-${role}.service`)
    .split('\n')
    .find((l) => l.startsWith('ExecStart='));
  return line!.slice('ExecStart='.length).trim().split(/\s+/);
}

/** Top-level blocks of compose.yaml, and each service's, by name (`x-manager`, `manager-1`...). */
function composeBlocks(): Map<string, string> {
  const blocks = new Map<string, string>();
  let top = '';
  let name = '';
  for (const line of read('deploy/compose.yaml').split('\n')) {
    const topLevel = /^([A-Za-z0-9._-]+):(?: &\S+)?\s*$/.exec(line);
    const service = top === 'services' ? /^ {2}([A-Za-z0-9._-]+):\s*$/.exec(line) : null;
    if (topLevel) top = name = topLevel[1]!;
    else if (service) name = service[1]!;
    else if (name) blocks.set(name, `${blocks.get(name) ?? ''}${line}\n`);
  }
  return blocks;
}

/** `NAME: value` lines of a compose block's `environment:` mapping. */
function composeEnvironment(block: string): Map<string, string> {
  return new Map([...block.matchAll(/^ {6}(IMGVAULT_[A-Z0-9_]+): (.*)$/gm)].map((m) => [m[1]!, m[2]!]));
}

/** The env entries of a Kubernetes container: literal values, or `<from>` for valueFrom. */
function k8sEnvironment(role: Role): Map<string, string> {
  const env = new Map<string, string>();
  const lines = read(`deploy/k8s/${role}.yaml`).split('\n');
  lines.forEach((line, i) => {
    const inline = /- \{ name: (IMGVAULT_[A-Z0-9_]+), value: "?([^"]*?)"? \}$/.exec(line);
    if (inline) env.set(inline[1]!, inline[2]!);
    const block = /- name: (IMGVAULT_[A-Z0-9_]+)$/.exec(line);
    if (block) {
      const next = lines[i + 1]!;
      const value = /^\s+value: "?([^"]*?)"?$/.exec(next);
      env.set(block[1]!, value ? value[1]! : next.includes('valueFrom') ? '<from>' : '<unparsed>');
    }
  });
  return env;
}

describe('deploy/ files', () => {
  it.each(ROLES)('every variable of %s.env.example is one the command reads', (role) => {
    const known = varsRead(role);
    expect(known.size).toBeGreaterThan(5);
    for (const key of envFile(role).keys()) expect(known, key).toContain(key);
  });

  it.each(ROLES)('the %s unit runs bin/imgvault.js with its role and the example env file', (role) => {
    expect(unitCommand(role)).toEqual(['/opt/imgvault/bin/imgvault.js', role]);
    expect(read(`deploy/imgvault-${role}.service`)).toContain(`EnvironmentFile=/etc/imgvault/${role}.env\n`);
  });

  it('the image runs the units program, as a fixed non-root user, with the example data folders', () => {
    const docker = read('deploy/Dockerfile');
    expect(docker).toMatch(/^FROM node:20-slim AS build$/m);
    expect(docker).toMatch(/^FROM node:20-slim$/m);
    expect(docker).toContain(`ENTRYPOINT ["${unitCommand('manager')[0]}"]`);
    expect(docker).toMatch(/^USER imgvault:imgvault$/m);
    const volumes = /^VOLUME (\[.*\])$/m.exec(docker)!;
    expect(JSON.parse(volumes[1]!).sort()).toEqual(ROLES.map((r) => envFile(r).get('IMGVAULT_DATA')).sort());
    for (const role of ROLES) expect(docker).toMatch(new RegExp(`^EXPOSE .*\\b${listenPort(role)}\\b`, 'm'));
  });

  it.each(ROLES)('compose runs three %ss from the example env file, changing only keys it has', (role) => {
    const blocks = composeBlocks();
    const anchor = blocks.get(`x-${role}`)!;
    expect(anchor).toContain(`command: ["${role}"]`);
    expect(anchor).toContain(`env_file: [${role}.env.example]`);
    expect(anchor).toContain(`http://127.0.0.1:${listenPort(role)}/healthz`);
    const example = envFile(role);
    for (const i of [1, 2, 3]) {
      const service = blocks.get(`${role}-${i}`);
      expect(service, `${role}-${i}`).toContain(`<<: *${role}`);
      const env = composeEnvironment(service!);
      expect(env.size).toBeGreaterThan(0);
      for (const key of env.keys()) expect(example.has(key), `${role}-${i} sets ${key}`).toBe(true);
      expect(service).toContain(`aliases: [${role}-${i}.internal]`);
      expect(service).toMatch(new RegExp(`^ {6}- ${role}-${i}:${example.get('IMGVAULT_DATA')}$`, 'm'));
      // Its own credentials folder only: every manager the manager/ one, worker wN its worker-wN/.
      const folder = role === 'manager' ? 'manager' : `worker-${env.get('IMGVAULT_WORKER_ID')}`;
      const mounts = [...service!.matchAll(/(\S+):\/etc\/imgvault\/credentials:ro$/gm)].map((m) => m[1]);
      expect(mounts, `${role}-${i}`).toEqual([`./secrets/credentials/${folder}`]);
      // The host names the example's URLs use are the ones the aliases give.
      expect(example.get(HOST_KEYS[role][1]!)).toMatch(new RegExp(`^http://${role}-1\\.internal:`));
    }
    const secrets = /^secrets:\n((?: {2}.*\n)+)/m.exec(read('deploy/compose.yaml'))![1]!;
    expect(secrets).toContain('  client-tokens:\n');
  });

  it.each(ROLES)('%s.env.example names the credentials folder and no single secret', (role) => {
    const env = envFile(role);
    expect(env.get('IMGVAULT_CREDENTIALS_DIR')).toBe(CREDENTIALS_DIR);
    for (const key of env.keys()) expect(key).not.toMatch(SINGLE_SECRET);
  });

  it.each(DEPLOY_FILES)('%s does not go back to the single cluster secret', (file) => {
    const lines = read(file)
      .split('\n')
      .filter((l) => SINGLE_SECRET.test(l));
    expect(lines).toEqual([]);
  });

  it('every credentials folder compose mounts is one that credentials init makes for its ids', () => {
    const blocks = composeBlocks();
    const id = (role: Role, i: number) =>
      composeEnvironment(blocks.get(`${role}-${i}`)!).get(
        role === 'manager' ? 'IMGVAULT_MANAGER_ID' : 'IMGVAULT_WORKER_ID',
      )!;
    const dir = mkdtempSync(join(tmpdir(), 'imgvault-compose-creds-'));
    try {
      credentialsInit(
        join(dir, 'credentials'),
        [1, 2, 3].map((i) => id('manager', i)),
        [1, 2, 3].map((i) => id('worker', i)),
      );
      const mounts = [...read('deploy/compose.yaml').matchAll(/\.\/secrets\/(credentials\/\S+):\/etc\//g)];
      expect(mounts).toHaveLength(6);
      for (const [, folder] of mounts) expect(statSync(join(dir, folder!)).isDirectory(), folder).toBe(true);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it.each(ROLES)(
    'the %s StatefulSet sets the example variables, the same values where a host does not differ',
    (role) => {
      const manifest = read(`deploy/k8s/${role}.yaml`);
      expect(manifest).toContain('kind: StatefulSet');
      expect(manifest).toContain(`serviceName: imgvault-${role}`);
      expect(manifest).toMatch(/clusterIP: None/);
      expect(manifest).toContain(`args: ["${role}"]`);
      expect(manifest).toContain('volumeClaimTemplates:');
      const env = k8sEnvironment(role);
      const example = envFile(role);
      expect([...env.keys()].sort()).toEqual([...example.keys()].sort());
      for (const [key, value] of example) {
        if (!HOST_KEYS[role].includes(key)) expect(env.get(key), key).toBe(value);
      }
      expect(manifest).toContain(`mountPath: ${example.get('IMGVAULT_DATA')} }`);
      expect(manifest).toContain(`httpGet: { path: /healthz, port: ${listenPort(role)} }`);
      expect(env.get('IMGVAULT_CREDENTIALS_DIR')).toBe(CREDENTIALS_DIR);
    },
  );

  it('the manager pods mount the manager keys and nothing of a worker', () => {
    const manifest = read('deploy/k8s/manager.yaml');
    expect(manifest).toContain(`{ name: credentials, mountPath: ${CREDENTIALS_DIR}, readOnly: true }`);
    expect(manifest).toContain('secretName: imgvault-manager,');
    expect(manifest).not.toContain('imgvault-workers');
  });

  it('each worker pod mounts only its own folder of the workers Secret, chosen by its pod name', () => {
    const manifest = read('deploy/k8s/worker.yaml');
    expect(manifest).toContain(
      `- name: credentials\n${' '.repeat(14)}mountPath: ${CREDENTIALS_DIR}\n${' '.repeat(14)}subPathExpr: $(POD_NAME)\n`,
    );
    expect(manifest).toMatch(
      /- name: POD_NAME\n\s+valueFrom: \{ fieldRef: \{ fieldPath: metadata\.name \} \}/,
    );
    expect(manifest).toContain('secretName: imgvault-workers\n');
    expect(manifest).not.toContain('imgvault-manager\n');
    const replicas = Number(/replicas: (\d+)/.exec(manifest)![1]);
    const items = [...manifest.matchAll(/- \{ key: (\S+), path: (\S+) \}/g)].map((m) => [m[1], m[2]]);
    const expected = Array.from({ length: replicas }, (_, i) =>
      ['worker', 'access'].map((kind) => [
        `imgvault-worker-${i}.${kind}.credential`,
        `imgvault-worker-${i}/${kind}.credential`,
      ]),
    ).flat();
    expect(items).toEqual(expected);
  });
});

const hasCommand = (cmd: string, args: string[]) => spawnSync(cmd, args, { stdio: 'ignore' }).status === 0;

describe.skipIf(!hasCommand('systemd-analyze', ['--version']))('systemd units', () => {
  it('pass systemd-analyze verify without a warning, with /opt/imgvault being this checkout', () => {
    const dir = mkdtempSync(join(tmpdir(), 'imgvault-units-'));
    try {
      const units = ROLES.map((role) => {
        const file = join(dir, `imgvault-${role}.service`);
        writeFileSync(file, read(`deploy/imgvault-${role}.service`).replaceAll('/opt/imgvault', REPO));
        return file;
      });
      const res = spawnSync('systemd-analyze', ['verify', ...units], { encoding: 'utf8', timeout: 60_000 });
      expect(res.stderr.trim()).toBe('');
      expect(res.status).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe.skipIf(!hasCommand('kubectl', ['version', '--client']))('Kubernetes manifests', () => {
  it('render with kubectl kustomize, from credentials init, into a Secret per role and two StatefulSets', () => {
    const dir = mkdtempSync(join(tmpdir(), 'imgvault-k8s-'));
    try {
      cpSync(join(REPO, 'deploy/k8s'), dir, { recursive: true });
      const pods = (role: Role) => [0, 1, 2].map((i) => `imgvault-${role}-${i}`);
      credentialsInit(join(dir, 'secrets/credentials'), pods('manager'), pods('worker'));
      writeFileSync(join(dir, 'secrets/client-tokens'), 'b'.repeat(48));
      const out = execFileSync('kubectl', ['kustomize', dir], { encoding: 'utf8', timeout: 60_000 });
      expect(out.match(/^kind: StatefulSet$/gm)).toHaveLength(2);
      expect(out.match(/^kind: Secret$/gm)).toHaveLength(3);
      expect(out.match(/clusterIP: None/g)).toHaveLength(2);
      for (const name of ['imgvault-manager', 'imgvault-workers', 'imgvault-clients']) {
        expect(out).toContain(`secretName: ${name}`);
      }
      // A Secret document with whitespace and YAML's `|` taken out: long base64 values are wrapped.
      const secret = (name: string) => {
        const docs = out.split(/^---$/m).filter((d) => /^kind: Secret$/m.test(d));
        return docs.find((d) => d.includes(`  name: ${name}\n`))!.replace(/[\s|]+/g, '');
      };
      const b64 = (file: string) => readFileSync(join(dir, 'secrets/credentials', file)).toString('base64');
      expect(secret('imgvault-manager')).toContain(`raft.key:${b64('manager/raft.key')}`);
      expect(secret('imgvault-manager')).not.toContain('credential');
      for (const pod of pods('worker')) {
        for (const kind of ['worker', 'access']) {
          const file = `${kind}.credential`;
          expect(secret('imgvault-workers')).toContain(`${pod}.${file}:${b64(`worker-${pod}/${file}`)}`);
        }
      }
      expect(secret('imgvault-workers')).not.toContain('.key:');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
