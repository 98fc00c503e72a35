// deploy/ holds one deployment written five ways: the example env files, the systemd units (which
// hosts.test.ts runs in network namespaces), the Dockerfile, compose.yaml and the Kubernetes
// manifests. No container engine or cluster runs here, so these checks hold the others to what the
// namespace test runs: the same program and role, only variables the command reads, the example's
// values wherever a host does not differ, the data where IMGVAULT_DATA says, /healthz on the
// listen port. Plain text reading (no YAML library): the files are ours and kept regular.

import { execFileSync, spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { MANAGER_ENV } from '../../src/manager/managerConfig.ts';

const REPO = fileURLToPath(new URL('../..', import.meta.url));
const read = (path: string) => readFileSync(join(REPO, path), 'utf8');

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
      expect(service).toContain(`:${example.get('IMGVAULT_DATA')}"]`);
      // The host names the example's URLs use are the ones the aliases give.
      expect(example.get(HOST_KEYS[role][1]!)).toMatch(new RegExp(`^http://${role}-1\\.internal:`));
    }
    const secrets = /^secrets:\n((?: {2}.*\n)+)/m.exec(read('deploy/compose.yaml'))![1]!;
    for (const name of ['cluster-secret', 'client-tokens']) expect(secrets).toContain(`  ${name}:\n`);
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
      expect(manifest).toContain('mountPath: /etc/imgvault, readOnly: true');
    },
  );
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
  it('render with kubectl kustomize into a Secret and two StatefulSets with headless Services', () => {
    const dir = mkdtempSync(join(tmpdir(), 'imgvault-k8s-'));
    try {
      cpSync(join(REPO, 'deploy/k8s'), dir, { recursive: true });
      writeFileSync(join(dir, 'secrets/cluster-secret'), 'a'.repeat(64));
      writeFileSync(join(dir, 'secrets/client-tokens'), 'b'.repeat(48));
      const out = execFileSync('kubectl', ['kustomize', dir], { encoding: 'utf8', timeout: 60_000 });
      expect(out.match(/^kind: StatefulSet$/gm)).toHaveLength(2);
      expect(out.match(/^kind: Secret$/gm)).toHaveLength(1);
      expect(out.match(/clusterIP: None/g)).toHaveLength(2);
      expect(out).toContain('secretName: imgvault');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
