#!/usr/bin/env bash
# One imgvault process per host, on one Linux machine: every manager and worker gets a network
# namespace of its own ("a host") with its own address on a private bridge, and runs exactly what
# deploy/imgvault-manager.service and deploy/imgvault-worker.service run (their ExecStart=), with
# the environment of deploy/manager.env.example and deploy/worker.env.example, changed only where
# a host differs (its id, URL, zone, data folder, credentials folder). Credentials are per role, as
# deploy/README.md makes them: `imgvault credentials init`, then each host gets only its own folder
# (every manager the manager/ folder, worker wN only worker-wN/). tests/hosts/hosts.test.ts runs
# this script and checks the cluster it brings up.
#
#   sudo deploy/hosts-demo.sh          bring the hosts up, print how to use them, stay until Ctrl-C
#   sudo deploy/hosts-demo.sh clean    remove what runs of this script left behind (their script died)
#   sudo deploy/hosts-demo.sh clean ivt-<pid>-<tag>    remove the namespaces of that prefix
#
# Needs root and iproute2 (`ip netns`). Nothing is routed to or from the rest of the machine: the
# bridge lives in a namespace of its own, the root namespace gets no address and no route, and the
# namespaces have no default route. Host names (manager-1.internal ...) resolve through
# /etc/netns/<namespace>/hosts, which `ip netns exec` mounts over /etc/hosts.
#
# Environment (all optional): IVT_PREFIX namespace prefix (default ivt-<pid>-<random>: `clean`
# removes a prefix whose pid is gone), IVT_NET first three octets of the /24 (default 10.213.<n>),
# IVT_WORK folder for data, credentials, env files and logs (default a new temp folder, removed at
# the end unless IVT_KEEP=1), IMGVAULT_LOG_LEVEL (default info).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEPLOY="$REPO/deploy"
HOSTS=(m1 m2 m3 w1 w2 w3 c)

die() {
  echo "hosts-demo: $*" >&2
  exit 1
}

# Namespaces of runs whose script is gone: ivt-<pid>-<tag>-<host>.
clean_stale() {
  local ns pid
  for ns in $(ip netns list | awk '{print $1}' | grep -E '^ivt-[0-9]+-' || true); do
    pid=${ns#ivt-}
    pid=${pid%%-*}
    if ! kill -0 "$pid" 2>/dev/null; then remove_ns "$ns"; fi
  done
  for ns in /etc/netns/ivt-*; do
    [[ -d $ns ]] || continue
    ns=${ns#/etc/netns/}
    pid=${ns#ivt-}
    pid=${pid%%-*}
    if ! kill -0 "$pid" 2>/dev/null; then rm -rf "/etc/netns/$ns"; fi
  done
}

# Kills what still runs inside (by pid), then deletes it: its veth ends go with it.
remove_ns() {
  local ns=$1 pids
  pids=$(ip netns pids "$ns" 2>/dev/null || true)
  # shellcheck disable=SC2086
  [[ -z $pids ]] || kill -KILL $pids 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "/etc/netns/$ns"
}

if [[ ${1:-} == clean && $# -eq 1 ]]; then
  clean_stale
  exit 0
fi
if [[ ${1:-} == clean && $# -eq 2 && $2 =~ ^ivt-[0-9]+-[A-Za-z0-9]+$ ]]; then
  for ns in $(ip netns list | awk '{print $1}' | grep -E "^$2-" || true); do remove_ns "$ns"; done
  rm -rf "/etc/netns/$2"-*
  exit 0
fi
[[ $# -eq 0 ]] || die "usage: $0 [clean [ivt-<pid>-<tag>]]"
[[ $(id -u) -eq 0 ]] || die "needs root (ip netns)"
command -v ip >/dev/null || die "needs iproute2 (the ip command)"
command -v node >/dev/null || die "needs node on the PATH"

PREFIX=${IVT_PREFIX:-ivt-$$-$RANDOM}
[[ $PREFIX =~ ^ivt-[0-9]+-[A-Za-z0-9]+$ ]] || die "IVT_PREFIX must look like ivt-<pid>-<tag>"
NET=${IVT_NET:-10.213.$((RANDOM % 200 + 20))}
[[ $NET =~ ^10\.[0-9]+\.[0-9]+$ ]] || die "IVT_NET must be the first three octets of a 10.x.y.0/24"
WORK=${IVT_WORK:-$(mktemp -d "${TMPDIR:-/tmp}/imgvault-hosts.XXXXXX")}
export IMGVAULT_LOG_LEVEL=${IMGVAULT_LOG_LEVEL:-info}
SW="$PREFIX-sw"
PIDS=()
SLEEPER=

addr() {
  case $1 in
    m*) echo "$NET.1${1#m}" ;;
    w*) echo "$NET.2${1#w}" ;;
    c) echo "$NET.100" ;;
  esac
}

name() {
  case $1 in
    m*) echo "manager-${1#m}.internal" ;;
    w*) echo "worker-${1#w}.internal" ;;
    c) echo "client.internal" ;;
  esac
}

cleanup() {
  trap - EXIT INT TERM
  local pid
  [[ -z $SLEEPER ]] || kill "$SLEEPER" 2>/dev/null || true
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for _ in $(seq 1 100); do
    local alive=0
    for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [[ $alive -eq 0 ]] && break
    sleep 0.1
  done
  for h in "${HOSTS[@]}" sw; do remove_ns "$PREFIX-$h"; done
  rmdir /etc/netns 2>/dev/null || true
  [[ ${IVT_KEEP:-0} == 1 ]] || rm -rf "$WORK"
  echo "hosts-demo: removed $PREFIX-*"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

clean_stale

# The switch: a bridge in a namespace of its own, one veth per host ("the cable"). Cut a host off
# with: ip -n <prefix>-sw link set <host> down
ip netns add "$SW"
ip -n "$SW" link add br0 type bridge
ip -n "$SW" link set br0 up
hosts_file="127.0.0.1 localhost"$'\n'
for h in "${HOSTS[@]}"; do hosts_file+="$(addr "$h") $(name "$h")"$'\n'; done
for h in "${HOSTS[@]}"; do
  ns="$PREFIX-$h"
  ip netns add "$ns"
  ip -n "$SW" link add "$h" type veth peer name eth0 netns "$ns"
  ip -n "$SW" link set "$h" master br0 up
  ip -n "$ns" addr add "$(addr "$h")/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" link set lo up
  mkdir -p "/etc/netns/$ns"
  printf '%s' "$hosts_file" >"/etc/netns/$ns/hosts"
done

# The credentials and one client token, as an operator makes them (deploy/README.md). The folders
# under $WORK/credentials stay on "the operator's machine"; each host gets a copy of its own one.
mkdir -p "$WORK"
"$REPO/bin/imgvault.js" credentials init --dir "$WORK/credentials" --managers m1,m2,m3 \
  --workers w1,w2,w3 >"$WORK/credentials-init.log" ||
  die "imgvault credentials init failed: $(cat "$WORK/credentials-init.log")"
node -e 'console.log(require("crypto").randomBytes(24).toString("hex"))' >"$WORK/client-tokens"
chmod 0600 "$WORK/client-tokens"

# Host h's copy of one folder of credentials init (its /etc/imgvault/credentials).
give_credentials() {
  local h=$1 folder=$2
  mkdir -p "$WORK/$h"
  cp -a "$WORK/credentials/$folder" "$WORK/$h/credentials"
}

# What the unit runs, with /opt/imgvault being this checkout.
exec_start() {
  sed -n 's/^ExecStart=//p' "$DEPLOY/imgvault-$1.service" | sed "s|/opt/imgvault|$REPO|g"
}

# The example env file with KEY=VALUE lines replaced (each KEY must be in the example).
render_env() {
  local example=$1 out=$2
  shift 2
  cp "$example" "$out"
  local kv
  for kv in "$@"; do
    grep -q "^${kv%%=*}=" "$out" || die "${kv%%=*} is not in $example"
    sed -i "s|^${kv%%=*}=.*|$kv|" "$out"
  done
}

# systemd's EnvironmentFile= semantics for these files: KEY=VALUE lines, # comments.
start() {
  local h=$1 unit=$2 env=$3
  (
    set -a
    # shellcheck disable=SC1090
    . "$env"
    set +a
    # shellcheck disable=SC2046
    exec ip netns exec "$PREFIX-$h" $(exec_start "$unit")
  ) >"$WORK/$h.log" 2>&1 &
  PIDS+=("$!")
}

for i in 1 2 3; do
  give_credentials "m$i" manager
  render_env "$DEPLOY/manager.env.example" "$WORK/m$i/manager.env" \
    "IMGVAULT_MANAGER_ID=m$i" \
    "IMGVAULT_MANAGER_URL=http://manager-$i.internal:7001" \
    "IMGVAULT_DATA=$WORK/m$i/data" \
    "IMGVAULT_CREDENTIALS_DIR=$WORK/m$i/credentials" \
    "IMGVAULT_CLIENT_TOKENS_FILE=$WORK/client-tokens"
  start "m$i" manager "$WORK/m$i/manager.env"
done
for i in 1 2 3; do
  give_credentials "w$i" "worker-w$i"
  render_env "$DEPLOY/worker.env.example" "$WORK/w$i/worker.env" \
    "IMGVAULT_WORKER_ID=w$i" \
    "IMGVAULT_ADVERTISE_URL=http://worker-$i.internal:7101" \
    "IMGVAULT_DATA=$WORK/w$i/blobs" \
    "IMGVAULT_ZONE=rack-$i" \
    "IMGVAULT_CREDENTIALS_DIR=$WORK/w$i/credentials"
  start "w$i" worker "$WORK/w$i/worker.env"
done

# Ready when a manager reached from the client host names a leader whose table shows the three
# workers up; bounded (IVT_READY_TIMEOUT_S, default 120 s).
ready_probe='
const deadline = Date.now() + Number(process.argv[1]) * 1000;
const headers = { authorization: `Bearer ${process.argv[2]}` };
const get = async (url) => (await fetch(url, { headers, signal: AbortSignal.timeout(2000) })).json();
for (;;) {
  try {
    const raft = await get("http://manager-1.internal:7001/v1/cluster/raft");
    if (raft.leader) {
      const { nodes } = await get(`${raft.leader.url}/v1/cluster/nodes`);
      if (nodes.filter((n) => n.state === "up").length === 3) process.exit(0);
    }
  } catch {}
  if (Date.now() > deadline) process.exit(1);
  await new Promise((r) => setTimeout(r, 250));
}'
ip netns exec "$PREFIX-c" node --input-type=module -e "$ready_probe" "${IVT_READY_TIMEOUT_S:-120}" \
  "$(cat "$WORK/client-tokens")" ||
  die "no leader with three workers up within ${IVT_READY_TIMEOUT_S:-120} s; see $WORK/*.log"

cat <<EOF
hosts-demo: ready prefix=$PREFIX net=$NET.0/24 work=$WORK
  managers: http://manager-{1,2,3}.internal:7001 ($NET.11-13)   workers: $NET.21-23   client: $NET.100
  a shell on the client host:  ip netns exec $PREFIX-c bash
  upload from it:              $REPO/bin/imgvault.js upload --url http://manager-1.internal:7001 --token \$(cat $WORK/client-tokens) <files>
  operator commands from it:   $REPO/bin/imgvault.js raft transfer-leader --url http://manager-1.internal:7001 --secret-file $WORK/credentials/operator/operator.credential m2
  cut a host off (m1..w3):     ip -n $SW link set m1 down      (and up again)
  logs:                        $WORK/<host>.log
Ctrl-C removes everything.
EOF

# Stay until stopped; a process that exits (a host crashing) does not end the demo.
while true; do
  sleep 3600 &
  SLEEPER=$!
  wait "$SLEEPER" || true
done
