#!/usr/bin/env bash
# The embedded node's shell under load: `memdi bench` against memdi-embedded-host (the board's
# library on Linux, embassy-net's TCP/IP stack on a TAP device), as a single node, as the
# leader of a mixed cluster with two memdi-servers, and as a follower of that cluster (its
# writes forwarded to a server leader); memdi-server measured the same way through the same
# TAP network, for reference.
#
# Everything runs in a network namespace this script creates (and deletes on exit, with the
# TAP device); every process it starts is killed on exit. ROUNDS runs of each case (default
# 3); prints every run and the medians, as markdown table rows.
#
#   sudo bash bench/embedded-host.sh            # ROUNDS=3 REQUESTS=50000 CLIENTS=2
#
# CLIENTS stays at or below the embedded node's client connections (2, see
# embedded-node/src/capacity.rs); KEYSPACE (default 200) within its 256 keys.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

ROUNDS="${ROUNDS:-3}"
REQUESTS="${REQUESTS:-50000}"
CLIENTS="${CLIENTS:-2}"
KEYSPACE="${KEYSPACE:-200}"

[ "$(id -u)" = 0 ] || { echo "embedded-host: needs root (network namespace, TAP device)" >&2; exit 2; }
cargo build --release --quiet -p memdi-node --bin memdi-server --bin memdi
cargo build --release --quiet -p memdi-embedded --bin memdi-embedded-host
bin=target/release

ns="memdi-bench-$$"
tap=benchtap0
server_ip=10.78.0.1
embedded_ip=10.78.0.2
work="$(mktemp -d)"
pids=()
declare -A server_pid
cleanup() {
    for pid in "${pids[@]}"; do
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    ip netns del "$ns" 2>/dev/null || true
    if [ -n "${KEEP_LOGS:-}" ]; then
        echo "embedded-host: logs kept in $work" >&2
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT

ip netns add "$ns"
ip -n "$ns" link set lo up
ip netns exec "$ns" ip tuntap add name "$tap" mode tap
ip -n "$ns" link set "$tap" up
ip -n "$ns" addr add "$server_ip/24" dev "$tap"

in_ns() { ip netns exec "$ns" "$@"; }
memdi() { in_ns "$bin/memdi" "$@"; }

stop_all() {
    for pid in "${pids[@]}"; do
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    pids=()
    rm -rf "$work"/data-*
}

# start_embedded CLUSTER: the embedded node 3 at $embedded_ip.
start_embedded() {
    # `ip netns exec` directly (not through a shell function), so that $! is the node.
    ip netns exec "$ns" env RUST_LOG="${EMBEDDED_LOG:-info}" "$bin/memdi-embedded-host" --tap "$tap" --address "$embedded_ip/24" --node-id 3 \
        --cluster "$1" >>"$work/embedded.log" 2>&1 &
    pids+=("$!")
}

# start_server ID CLUSTER: server ID with clients on port 7377+2*ID, peers on 7378+2*ID.
start_server() {
    local id="$1"
    ip netns exec "$ns" "$bin/memdi-server" --node-id "$id" --protected-mode no \
        --client-addr "$server_ip:$((7377 + 2 * id))" --peer-addr "$server_ip:$((7378 + 2 * id))" \
        --cluster "$2" --data-dir "$work/data-$id" >>"$work/server-$id.log" 2>&1 &
    pids+=("$!")
}

# leader_of ADDR: the leader ADDR names, waiting up to 20 s.
leader_of() {
    local leader=""
    for _ in $(seq 100); do
        leader="$(memdi cluster status --json --addr "$1" 2>/dev/null |
            python3 -c 'import json, sys; print(json.load(sys.stdin)["leader_id"] or "")' 2>/dev/null || true)"
        [ -n "$leader" ] && { echo "$leader"; return 0; }
        sleep 0.2
    done
    echo "embedded-host: no leader seen by $1 within 20 s" >&2
    return 1
}

# bench NAME ADDR OP [PIPELINE]: ROUNDS runs; prints each and the medians.
bench() {
    local name="$1" addr="$2" op="$3" pipeline="${4:-1}" runs=()
    for round in $(seq "$ROUNDS"); do
        local line
        # The embedded node serves two clients at once; let the last one's slot free up.
        sleep 1
        line="$(memdi bench --addr "$addr" --op "$op" --requests "$REQUESTS" --clients "$CLIENTS" \
            --keyspace "$KEYSPACE" --pipeline "$pipeline" --csv)"
        echo "  run $round: $name $op, pipeline $pipeline: $line" >&2
        runs+=("$line")
    done
    printf '%s\n' "${runs[@]}" | python3 -c '
import statistics, sys
name, op, pipeline = sys.argv[1], sys.argv[2], sys.argv[3]
rows = [line.strip().split(",") for line in sys.stdin if line.strip()]
errors = sum(int(r[5]) for r in rows)
rate = statistics.median(float(r[6]) for r in rows)
p50 = statistics.median(float(r[7]) for r in rows)
p99 = statistics.median(float(r[8]) for r in rows)
print(f"| {name} | {op} | {pipeline} | {rate:,.0f} | {p50:.0f} | {p99:.0f} | {errors} |")
' "$name" "$op" "$pipeline"
}

echo "| node | op | pipeline | requests/s (median of $ROUNDS) | p50 µs | p99 µs | errors |"
echo "|---|---|---|---|---|---|---|"

# 1. The embedded node alone.
start_embedded "3=$embedded_ip:7380"
leader_of "$embedded_ip:7379" >/dev/null
bench "embedded, single node" "$embedded_ip:7379" set
bench "embedded, single node" "$embedded_ip:7379" get
stop_all

# 2. A mixed cluster led by the embedded node. A node without a disk recovers before it
#    votes or stands (docs/protocol.md 4.10), so a new cluster always elects a server first;
#    the server leader is killed (and restarted) until the embedded node wins an election
#    (up to 6 tries).
cluster="1=$server_ip:7380,2=$server_ip:7382,3=$embedded_ip:7380"
start_server 1 "$cluster"
server_pid[1]="$!"
start_server 2 "$cluster"
server_pid[2]="$!"
start_embedded "$cluster"
leader="$(leader_of "$server_ip:7379")"
for _ in $(seq 50); do
    grep -q "recovered in term" "$work/embedded.log" && break
    sleep 0.2
done
for _ in 1 2 3 4 5 6; do
    [ "$leader" = 3 ] && break
    kill -9 "${server_pid[$leader]}"
    sleep 1.5
    start_server "$leader" "$cluster"
    server_pid[$leader]="$!"
    leader="$(leader_of "$embedded_ip:7379")"
done
if [ "$leader" = 3 ]; then
    bench "embedded, leader of 3" "$embedded_ip:7379" set
    bench "embedded, leader of 3" "$embedded_ip:7379" get
    bench "embedded, leader of 3" "$embedded_ip:7379" set 8
    bench "embedded, leader of 3" "$embedded_ip:7379" get 8
    bench "memdi-server, follower of the embedded leader" "$server_ip:7379" set
else
    echo "embedded-host: the embedded node won none of six elections; skipping the embedded-leader case" >&2
fi
stop_all

# 3. A mixed cluster led by a server; the embedded node follows and forwards.
start_server 1 "$cluster"
start_server 2 "$cluster"
leader_of "$server_ip:7379" >/dev/null
start_embedded "$cluster"
leader="$(leader_of "$embedded_ip:7379")"
bench "embedded, follower (server $leader leads)" "$embedded_ip:7379" set
bench "embedded, follower (server $leader leads)" "$embedded_ip:7379" get
bench "embedded, follower (server $leader leads)" "$embedded_ip:7379" set 8
bench "embedded, follower (server $leader leads)" "$embedded_ip:7379" get 8
bench "memdi-server $leader, leader of 3" "$server_ip:$((7377 + 2 * leader))" set
