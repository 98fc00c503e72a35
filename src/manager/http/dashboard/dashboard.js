// The imgvault dashboard: plain JavaScript, no framework, no build. Every POLL_MS it asks every
// manager it knows for its Raft view (GET /v1/cluster/raft; the members named there are added, so
// the page learns every manager from the one it came from), picks the leader of the highest term,
// and reads the node table and totals from it (any manager that answers when there is no leader).
// When the manager the page came from stops leading or dies, the next poll simply reads elsewhere.
// The event feed is derived here from what changed between two polls, so it starts when the page
// opens. With client tokens on, the token typed in is kept in sessionStorage (this tab only) and
// sent as a bearer token to every manager (they allow each other's origins, dashboardCors.ts).

const POLL_MS = 1000;
const REQUEST_TIMEOUT_MS = 2500;
const MAX_EVENTS = 200;
const PAGE_SIZE = 60;
const TOKEN_KEY = 'imgvault.token';

const known = new Set([location.origin]);
let previous = null;
let source = null;
const events = [];

// ---- HTTP ----

function authHeaders() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { authorization: `Bearer ${token}` } : {};
}

class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function getJson(base, path) {
  const res = await fetch(new URL(path, base), {
    headers: authHeaders(),
    signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
  });
  if (!res.ok) throw new HttpError(res.status, `${res.status} from ${base}${path}`);
  return res.json();
}

const trimSlash = (url) => url.replace(/\/+$/, '');

// ---- gathering one snapshot ----

async function probeManagers() {
  const views = new Map();
  let round = [...known];
  while (round.length > 0) {
    const answers = await Promise.all(round.map((u) => getJson(u, '/v1/cluster/raft').catch((err) => err)));
    round.forEach((u, i) => {
      views.set(u, answers[i]);
    });
    const named = answers.flatMap((a) => (a instanceof Error ? [] : Object.values(a.members ?? {})));
    round = [...new Set(named.map(trimSlash))].filter((u) => !views.has(u));
    for (const u of round) known.add(u);
  }
  return views;
}

function findLeader(views) {
  let best = null;
  for (const [url, v] of views) {
    if (v instanceof Error || v.role !== 'leader') continue;
    if (!best || v.term > best.view.term) best = { url, view: v };
  }
  return best;
}

function managerRows(views, leader) {
  const idByUrl = new Map();
  for (const v of views.values()) {
    if (v instanceof Error) continue;
    for (const [id, url] of Object.entries(v.members ?? {})) idByUrl.set(trimSlash(url), id);
  }
  // A manager reached under two names (the page's own address as localhost, its member URL as
  // 127.0.0.1) is listed once: the name that answers, the member URL when both do.
  const rank = (m) => (m.reachable ? 0 : 2) + (idByUrl.has(m.url) ? 0 : 1);
  return [...views]
    .map(([url, v]) => {
      if (v instanceof Error) return { id: idByUrl.get(url) ?? url, url, reachable: false, error: v.message };
      const isLeader = leader !== null && leader.view.id === v.id;
      const peer = leader?.view.peers?.[v.id];
      return {
        id: v.id,
        url,
        reachable: true,
        role: v.role,
        term: v.term,
        commit: v.commit,
        applied: v.applied,
        lastIndex: v.lastIndex,
        lag: isLeader ? 0 : peer ? Math.max(0, leader.view.lastIndex - peer.match) : null,
        lastContactMs: isLeader ? null : (peer?.lastContactMs ?? null),
      };
    })
    .sort((a, b) => rank(a) - rank(b))
    .filter((m, i, rows) => rows.findIndex((r) => r.id === m.id) === i)
    .sort((a, b) => a.id.localeCompare(b.id));
}

async function snapshot() {
  const views = await probeManagers();
  const leader = findLeader(views);
  const managers = managerRows(views, leader);
  const reachable = managers.filter((m) => m.reachable).map((m) => m.url);
  const sources = leader ? [leader.url, ...reachable.filter((u) => u !== leader.url)] : reachable;
  for (const from of sources) {
    try {
      const [nodes, stats] = await Promise.all([
        getJson(from, '/v1/cluster/nodes'),
        getJson(from, '/v1/cluster/stats'),
      ]);
      return { leader, managers, workers: nodes.nodes, stats, from, unauthorized: false };
    } catch {}
  }
  const unauthorized = [...views.values()].some((v) => v instanceof HttpError && v.status === 401);
  return { leader, managers, workers: [], stats: null, from: null, unauthorized };
}

// ---- events: what changed since the last snapshot ----

function diff(before, now) {
  const out = [];
  if (before === null) {
    out.push(now.leader ? `leader is ${now.leader.view.id} (term ${now.leader.view.term})` : 'no leader');
    return out;
  }
  const leaderOf = (s) => (s.leader ? `${s.leader.view.id}@${s.leader.view.term}` : null);
  if (leaderOf(before) !== leaderOf(now)) {
    out.push(
      now.leader
        ? `new leader: ${now.leader.view.id} (term ${now.leader.view.term})`
        : 'no leader: election running',
    );
  }
  const wasUp = new Map(before.managers.map((m) => [m.id, m.reachable]));
  for (const m of now.managers) {
    const was = wasUp.get(m.id);
    if (was === true && !m.reachable) out.push(`manager ${m.id} stopped answering`);
    if (was === false && m.reachable) out.push(`manager ${m.id} answers again`);
    if (was === undefined && before.managers.length > 0) out.push(`manager ${m.id} joined (${m.url})`);
  }
  const stateOf = new Map(before.workers.map((w) => [w.id, w.state]));
  for (const w of now.workers) {
    const was = stateOf.get(w.id);
    if (was === undefined) out.push(`worker ${w.id} registered (${w.state})`);
    else if (was !== w.state) out.push(`worker ${w.id}: ${was} → ${w.state}`);
  }
  out.push(...countEvents(now));
  if (before.from !== now.from && now.from !== null) out.push(`reading the tables from ${now.from}`);
  return out;
}

/**
 * Repair counts as last known: only the leader knows them (null elsewhere, as during an election),
 * so a change is judged against the last value a leader gave, not against a gap.
 */
const lastCount = { repairing: 0, underReplicated: 0 };

function countEvents(now) {
  const out = [];
  const value = (field) => (now.stats?.observedByLeader ? (now.stats[field] ?? null) : null);
  const repairing = value('repairing');
  if (repairing !== null) {
    if (lastCount.repairing === 0 && repairing > 0) out.push(`repair started: ${repairing} copies to move`);
    if (lastCount.repairing > 0 && repairing === 0) out.push('repair finished');
    lastCount.repairing = repairing;
  }
  const under = value('underReplicated');
  if (under !== null) {
    if (lastCount.underReplicated === 0 && under > 0) out.push(`${under} objects under-replicated`);
    if (lastCount.underReplicated > 0 && under === 0) out.push('every object has its copies again');
    lastCount.underReplicated = under;
  }
  return out;
}

function record(lines) {
  const at = new Date().toLocaleTimeString();
  for (const text of lines) events.unshift({ at, text });
  events.length = Math.min(events.length, MAX_EVENTS);
}

// ---- rendering (DOM nodes only: names and keys are user input, never HTML) ----

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') node.className = v;
    else if (k.startsWith('data-')) node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const c of children) node.append(c instanceof Node ? c : String(c ?? '-'));
  return node;
}

function bytes(n) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${u === 0 ? v : v.toFixed(1)} ${units[u]}`;
}

const ago = (ms) =>
  ms === null || ms === undefined ? '-' : ms < 1000 ? `${ms} ms ago` : `${(ms / 1000).toFixed(1)} s ago`;

function bar(fraction, label, kind) {
  const pct = Math.max(0, Math.min(1, fraction)) * 100;
  const fill = el('span');
  fill.style.width = `${pct.toFixed(1)}%`;
  return el('div', { class: `bar ${kind}`, title: label }, fill, el('em', {}, label));
}

/** Lag on a log scale: 1 entry shows, 10,000 fills the bar. */
const lagBar = (lag) =>
  lag === null ? '-' : bar(Math.log10(1 + lag) / 4, String(lag), lag > 0 ? 'warn' : 'ok');

function renderManagers(s) {
  const rows = s.managers.map((m) =>
    m.reachable
      ? el(
          'tr',
          { 'data-manager-id': m.id, 'data-role': m.role },
          el('td', {}, m.id),
          el('td', {}, m.url),
          el('td', {}, el('span', { class: `badge ${m.role}` }, m.role)),
          el('td', {}, m.term),
          el('td', {}, m.commit),
          el('td', {}, m.applied),
          el('td', {}, m.lastIndex),
          el('td', {}, lagBar(m.lag)),
          el('td', {}, ago(m.lastContactMs)),
        )
      : el(
          'tr',
          { 'data-manager-id': m.id, 'data-role': 'unreachable' },
          el('td', {}, m.id),
          el('td', {}, m.url),
          el('td', {}, el('span', { class: 'badge down' }, 'unreachable')),
          el('td', { colSpan: 6, class: 'muted' }, m.error),
        ),
  );
  document.querySelector('#managers tbody').replaceChildren(...rows);
}

function renderWorkers(s) {
  const rows = s.workers.map((w) => {
    const total = w.diskUsed + w.diskFree;
    return el(
      'tr',
      { 'data-worker-id': w.id, 'data-state': w.state },
      el('td', {}, w.id),
      el('td', {}, w.zone),
      el('td', {}, el('span', { class: `badge ${w.state}` }, w.state)),
      el(
        'td',
        {},
        total > 0 ? bar(w.diskUsed / total, `${bytes(w.diskUsed)} of ${bytes(total)}`, 'disk') : '-',
      ),
      el('td', {}, w.stored.objects),
      el('td', {}, bytes(w.stored.bytes)),
      el('td', {}, ago(w.silenceMs)),
    );
  });
  document.querySelector('#workers tbody').replaceChildren(...rows);
}

function renderTotals(s) {
  const st = s.stats;
  const card = (label, value, bad) =>
    el(
      'div',
      { class: `card${bad ? ' bad' : ''}`, 'data-total': label },
      el('strong', {}, value),
      el('span', {}, label),
    );
  const counted = (v) => (v === null || v === undefined ? '?' : v);
  document
    .getElementById('totals')
    .replaceChildren(
      card('objects', st ? st.objects : '?'),
      card('bytes', st ? bytes(st.bytes) : '?'),
      card('under-replicated', counted(st?.underReplicated), (st?.underReplicated ?? 0) > 0),
      card('unavailable', counted(st?.unavailable), (st?.unavailable ?? 0) > 0),
      card('lost', counted(st?.lost), (st?.lost ?? 0) > 0),
      card('repairing', counted(st?.repairing), (st?.repairing ?? 0) > 0),
    );
}

function renderSummary(s) {
  const leader = s.leader ? `leader ${s.leader.view.id} · term ${s.leader.view.term}` : 'NO LEADER';
  const from = s.from ? `tables from ${s.from}` : 'no manager answered';
  const summary = document.getElementById('summary');
  summary.textContent = `${leader} · ${from} · ${new Date().toLocaleTimeString()}`;
  summary.dataset.leader = s.leader ? s.leader.view.id : '';
  const banner = document.getElementById('banner');
  banner.hidden = !s.unauthorized;
  banner.textContent = s.unauthorized ? 'The cluster requires a client token: enter one above.' : '';
}

function renderEvents() {
  document
    .getElementById('events')
    .replaceChildren(...events.map((e) => el('li', {}, el('time', {}, e.at), ' ', e.text)));
}

// ---- the loop ----

async function poll() {
  try {
    const now = await snapshot();
    // Nothing is known without the token: the first readable snapshot starts the feed.
    if (!now.unauthorized) record(diff(previous, now));
    previous = now.unauthorized ? null : now;
    source = now;
    renderSummary(now);
    renderTotals(now);
    renderManagers(now);
    renderWorkers(now);
    renderEvents();
  } catch (err) {
    record([`dashboard error: ${err.message}`]);
    renderEvents();
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

// ---- gallery ----

let cursor = null;

/** Thumbnails come from a follower when one answers: the leader's cores are for uploads. */
function galleryBase() {
  const managers = source?.managers.filter((m) => m.reachable) ?? [];
  const follower = managers.find((m) => m.role !== 'leader');
  return (follower ?? managers[0])?.url ?? location.origin;
}

function tile(objectId, caption, size) {
  const img = el('img', { alt: caption, 'data-id': objectId, loading: 'lazy' });
  const figure = el(
    'figure',
    { class: 'thumb' },
    img,
    el('figcaption', { title: caption }, caption, el('small', {}, bytes(size))),
  );
  fetch(new URL(`/v1/images/${encodeURIComponent(objectId)}/thumbnail`, galleryBase()), {
    headers: authHeaders(),
    signal: AbortSignal.timeout(30_000),
  })
    .then((res) => (res.ok ? res.blob() : Promise.reject(new Error(`${res.status}`))))
    .then((blob) => {
      img.src = URL.createObjectURL(blob);
    })
    .catch((err) => {
      figure.classList.add('failed');
      img.alt = `${caption}: no thumbnail (${err.message})`;
    });
  return figure;
}

async function browse(append) {
  const bucket = document.getElementById('bucket').value.trim();
  const prefix = document.getElementById('prefix').value;
  const gallery = document.getElementById('gallery');
  if (!append) {
    gallery.replaceChildren();
    cursor = null;
  }
  const base = galleryBase();
  try {
    if (bucket === '') {
      const q = new URLSearchParams({ limit: String(PAGE_SIZE), ...(cursor ? { after: cursor } : {}) });
      const page = await getJson(base, `/v1/images?${q}`);
      gallery.append(...page.items.map((o) => tile(o.id, o.id, o.size)));
      document.getElementById('prefixes').replaceChildren();
      cursor = page.next;
    } else {
      const q = new URLSearchParams({
        prefix,
        delimiter: '/',
        limit: String(PAGE_SIZE),
        ...(cursor ? { cursor } : {}),
      });
      const page = await getJson(base, `/v1/buckets/${encodeURIComponent(bucket)}?${q}`);
      gallery.append(...page.names.map((n) => tile(n.objectId, n.key, n.size)));
      const up = prefix.replace(/[^/]*\/?$/, '');
      const links = [...(prefix ? [['..', up]] : []), ...page.commonPrefixes.map((p) => [p, p])];
      document
        .getElementById('prefixes')
        .replaceChildren(
          ...links.map(([label, target]) =>
            el('button', { type: 'button', class: 'prefix', onclick: () => openPrefix(target) }, label),
          ),
        );
      cursor = page.next;
    }
  } catch (err) {
    gallery.append(el('p', { class: 'muted' }, `could not list: ${err.message}`));
    cursor = null;
  }
  document.getElementById('more').hidden = !cursor;
}

function openPrefix(prefix) {
  document.getElementById('prefix').value = prefix;
  browse(false);
}

// ---- start ----

document.getElementById('token').value = sessionStorage.getItem(TOKEN_KEY) ?? '';
document.getElementById('token-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const token = document.getElementById('token').value.trim();
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
  browse(false);
});
document.getElementById('gallery-form').addEventListener('submit', (e) => {
  e.preventDefault();
  browse(false);
});
document.getElementById('more').addEventListener('click', () => browse(true));
poll().then(() => browse(false));
