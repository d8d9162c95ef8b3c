#!/usr/bin/env bash
# A shoal swarm on one machine: a manager, a seed and three nodes on 127.0.0.1, each with ports
# and a data directory of its own, sharing one swarm key, all joined to the manager's static
# cluster `local`. It runs until Ctrl-C (or SIGTERM), then stops everything it started.
#
#   examples/local-swarm.sh                       # Docker Hub as the upstream
#   UPSTREAM=docker.io=http://127.0.0.1:5000 examples/local-swarm.sh   # a registry of yours
#
# Environment (all optional):
#   SHOAL_BIN   the shoal binary (default: target/release/shoal, built with cargo if missing)
#   BASE_PORT   first port (default 16000): manager BASE_PORT+80; seed +1..+3; node i +i1..+i3
#               (mirror, p2p, admin), e.g. node 1: 16011 16012 16013
#   UPSTREAM    HOST=URL[,HOST=URL…], passed as --upstream to the seed and the nodes
#   SWARM_DIR   where data, logs and the CLI's session go (default: a new temporary directory,
#               removed on exit; a directory you name is kept)
#   ADMIN_PASSWORD  the manager's first administrator's password (default: a random one)
#
# Needs bash 4.4 or newer (empty arrays under `set -u`, `wait -n`; macOS's /bin/bash is 3.2:
# run it with a newer bash), curl, and the ports above free.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
base=${BASE_PORT:-16000}
manager_port=$((base + 80))
manager_url="http://127.0.0.1:$manager_port"

if [ -z "${SHOAL_BIN:-}" ]; then
  SHOAL_BIN="$here/target/release/shoal"
  if [ ! -x "$SHOAL_BIN" ]; then
    echo "building shoal (cargo build --release)…" >&2
    (cd "$here" && cargo build --release --locked --bin shoal)
  fi
fi
command -v curl >/dev/null || { echo "local-swarm.sh needs curl" >&2; exit 1; }

if [ -n "${SWARM_DIR:-}" ]; then
  dir=$SWARM_DIR
  keep=1
  mkdir -p "$dir"
else
  dir=$(mktemp -d "${TMPDIR:-/tmp}/shoal-swarm.XXXXXX")
  keep=0
fi
dir=$(cd "$dir" && pwd)
mkdir -p "$dir/logs"

pids=()
# Whether any of the started processes still runs (bash reaps its exited children itself, so
# `kill -0` fails for them).
any_running() {
  local pid
  for pid in "${pids[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then return 0; fi
  done
  return 1
}
# TERM to every process, up to 10 s for them to finish, then KILL to what is left.
stop() {
  trap - EXIT INT TERM
  echo "stopping the swarm…" >&2
  local pid
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for _ in $(seq 100); do
    any_running || break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      echo "process $pid did not stop within 10 s: killing it" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "$keep" = 0 ]; then rm -rf "$dir"; else echo "data and logs kept in $dir" >&2; fi
}
trap stop EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The CLI's session stays in this directory, not in ~/.config/shoal.
export SHOAL_CONFIG_DIR="$dir/cli"
shoal() { "$SHOAL_BIN" "$@"; }

# Fails unless every PORT on 127.0.0.1 is free: a process left over from an earlier run would
# answer in the new one's place.
need_free_ports() {
  local port
  for port in "$@"; do
    if (: <"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "port $port on 127.0.0.1 is in use (an earlier swarm still running? see BASE_PORT)" >&2
      exit 1
    fi
  done
}

# Starts a process in the background with its log in logs/NAME.log; its pid is in $last_pid.
start() {
  local name=$1
  shift
  "$SHOAL_BIN" "$@" >"$dir/logs/$name.log" 2>&1 &
  last_pid=$!
  pids+=("$last_pid")
}

# wait_ok NAME PID URL: waits until URL answers 200 while PID runs. Fails at once, with the
# log's tail, if PID exits, and after 30 s if URL never answers.
wait_ok() {
  local name=$1 pid=$2 url=$3
  for _ in $(seq 300); do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "$name exited before it came up; its log:" >&2
      tail -n 30 "$dir/logs/$name.log" >&2
      exit 1
    fi
    if curl -fsS -o /dev/null "$url" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "$name did not come up ($url); its log:" >&2
  tail -n 30 "$dir/logs/$name.log" >&2
  exit 1
}

upstream_args=()
if [ -n "${UPSTREAM:-}" ]; then
  IFS=, read -ra ups <<<"$UPSTREAM"
  for u in "${ups[@]}"; do upstream_args+=(--upstream "$u"); done
fi

# 1. The manager, SQLite in its data dir, with a known first administrator's password.
password=${ADMIN_PASSWORD:-$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')}
need_free_ports "$manager_port"
SHOAL_ADMIN_PASSWORD=$password start manager manager \
  --listen "127.0.0.1:$manager_port" --data-dir "$dir/manager"
wait_ok manager "$last_pid" "$manager_url/healthz"
printf '%s\n' "$password" | shoal login --manager "$manager_url" --user admin --password-stdin >/dev/null

# 2. A static cluster of the four hosts below; its join token is printed once, on the last line.
shoal cluster create local --static seed-1,node-1,node-2,node-3 --description "local-swarm.sh" \
  | tail -n 1 >"$dir/join.token"
chmod 600 "$dir/join.token"

# 3. One swarm key for all of them (peers without it cannot connect).
shoal swarm-key >"$dir/swarm.key"
chmod 600 "$dir/swarm.key"

# node NAME INDEX [FLAG…]: ports BASE+INDEX*10+1 (mirror), +2 (p2p), +3 (admin).
node() {
  local name=$1 i=$2
  shift 2
  local p=$((base + i * 10))
  need_free_ports $((p + 1)) $((p + 2)) $((p + 3))
  start "$name" node \
    --listen "127.0.0.1:$((p + 1))" \
    --p2p-listen "/ip4/127.0.0.1/tcp/$((p + 2))" \
    --admin-listen "127.0.0.1:$((p + 3))" \
    --data-dir "$dir/$name" \
    --swarm-key "$dir/swarm.key" \
    --manager "$manager_url" --token-file "$dir/join.token" --node-name "$name" \
    "${upstream_args[@]}" "$@"
  wait_ok "$name" "$last_pid" "http://127.0.0.1:$((p + 3))/healthz"
}

# 4. The seed, then three nodes that find the swarm through it.
node seed-1 0 --seed
seed_p2p="/ip4/127.0.0.1/tcp/$((base + 2))"
for i in 1 2 3; do
  node "node-$i" "$i" --bootstrap "$seed_p2p"
done

# 5. Wait until every node sees the other three, and the manager lists all four.
for i in 0 1 2 3; do
  status="http://127.0.0.1:$((base + i * 10 + 3))/status"
  peers=0
  for _ in $(seq 300); do
    # `|| true`: under pipefail a failed curl or a grep without a match would end the script.
    peers=$(curl -fsS "$status" 2>/dev/null | grep -o '"peers":[0-9]*' | head -n 1 | cut -d: -f2) || true
    [ "${peers:-0}" -ge 3 ] && break
    sleep 0.1
  done
  [ "${peers:-0}" -ge 3 ] || { echo "peer $i sees only ${peers:-0} peers" >&2; exit 1; }
done
joined=0
for _ in $(seq 300); do
  joined=$(shoal node list --cluster local --output json 2>/dev/null \
    | grep -o '"name": *"[a-z0-9-]*"' | wc -l) || true
  [ "${joined:-0}" -ge 4 ] && break
  sleep 0.1
done
[ "${joined:-0}" -ge 4 ] || { echo "only ${joined:-0} nodes joined the manager" >&2; exit 1; }

cat <<EOF
shoal swarm ready: a manager, a seed and three nodes on 127.0.0.1 (data and logs: $dir)

  manager   $manager_url   user admin, password $password
  seed-1    mirror 127.0.0.1:$((base + 1))   admin 127.0.0.1:$((base + 3))
EOF
for i in 1 2 3; do
  p=$((base + i * 10))
  echo "  node-$i    mirror 127.0.0.1:$((p + 1))   admin 127.0.0.1:$((p + 3))"
done
cat <<EOF

Pull through node-1 (a request without ?ns= means docker.io, whose upstream UPSTREAM may set):
  skopeo copy --src-tls-verify=false docker://127.0.0.1:$((base + 11))/library/busybox:latest oci:busybox:latest
  ctr images pull --plain-http 127.0.0.1:$((base + 11))/library/busybox:latest
Point a container runtime at it (add --write DIR|FILE to write; see docs/deployment.md):
  $SHOAL_BIN containerd-config --node http://127.0.0.1:$((base + 11))
  $SHOAL_BIN docker-config --node http://127.0.0.1:$((base + 11))
Watch it:
  curl -s 127.0.0.1:$((base + 13))/status
  curl -s 127.0.0.1:$((base + 13))/metrics | grep shoal_served_bytes_total
  SHOAL_CONFIG_DIR=$dir/cli $SHOAL_BIN node list
  SHOAL_CONFIG_DIR=$dir/cli $SHOAL_BIN task create --image library/busybox:latest --cluster local
Ctrl-C stops everything.
EOF

# Runs until a signal, or until one of the processes exits (they are this shell's only jobs).
wait -n || true
echo "a shoal process exited; see $dir/logs" >&2
exit 1
