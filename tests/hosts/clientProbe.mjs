// Runs on the client host of deploy/hosts-demo.sh (`ip netns exec <prefix>-c node clientProbe.mjs`),
// plain JavaScript so it starts without a loader. Prints one JSON line.
//   raft <managerUrl> <token>              that manager's GET /v1/cluster/raft
//   read <managerUrl> <token> <id>...      each image's status, size, sha256 and replicas, read
//                                          through that manager; retried while it answers other
//                                          than 200 (an election), for at most 240 s in all: a worker
//                                          cut off (not stopped) can hold one read for the 30 s a
//                                          manager waits for a worker's answer

import { createHash } from 'node:crypto';

const [mode, url, ...rest] = process.argv.slice(2);
const deadline = Date.now() + 240_000;

async function getJson(path, headers = {}) {
  const res = await fetch(`${url}${path}`, { headers, signal: AbortSignal.timeout(60_000) });
  return { status: res.status, json: res.status === 200 ? await res.json() : await res.text() };
}

async function readOne(id, headers) {
  let last = 'not tried';
  while (Date.now() < deadline) {
    try {
      const res = await fetch(`${url}/v1/images/${id}`, { headers, signal: AbortSignal.timeout(60_000) });
      const bytes = Buffer.from(await res.arrayBuffer());
      if (res.status === 200) {
        const meta = await getJson(`/v1/images/${id}/meta`, headers);
        return {
          status: 200,
          size: bytes.length,
          sha256: createHash('sha256').update(bytes).digest('hex'),
          replicas: meta.status === 200 ? meta.json.replicas : null,
        };
      }
      last = `${res.status} ${bytes.toString('utf8').slice(0, 200)}`;
    } catch (err) {
      last = String(err);
    }
    await new Promise((r) => setTimeout(r, 500));
  }
  return { status: 0, error: last };
}

if (mode === 'raft') {
  const [token] = rest;
  console.log(JSON.stringify((await getJson('/v1/cluster/raft', { authorization: `Bearer ${token}` })).json));
} else if (mode === 'read') {
  const [token, ...ids] = rest;
  const headers = { authorization: `Bearer ${token}` };
  const out = {};
  for (const id of ids) out[id] = await readOne(id, headers);
  console.log(JSON.stringify(out));
} else {
  console.error(`usage: clientProbe.mjs raft <url> <token> | read <url> <token> <id>...`);
  process.exit(2);
}
