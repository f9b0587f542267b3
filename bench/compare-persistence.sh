#!/usr/bin/env bash
# Snapshots of a large store: memdi's SAVE and load at start beside Redis's SAVE and RDB load,
# on the same machine, in alternation.
#
# Fills redis-server and one memdi-server node with KEYS keys (default 1,000,000; keys
# `key:%012d`, 64-byte values) through their RESP ports (redis-cli --pipe), then ROUNDS
# times (default 3), each server in turn:
#   - SAVE, timed by the client from sending to the answer (both write a temporary file,
#     fsync it and rename it over the old one);
#   - a restart on the same data directory (Redis: SHUTDOWN NOSAVE; memdi: kill -9, so no
#     final snapshot is written), timed from starting the process to the first PONG, and
#     each server's own figure for the load (Redis: "DB loaded from disk: S seconds";
#     memdi: "loaded snapshot ... in N ms").
# Prints every run, the medians and the memdi/Redis ratios (below 1: memdi is faster), and
# both snapshot files' sizes. Loopback only; both servers are stopped on exit.
#
#   bash bench/compare-persistence.sh          # KEYS=1000000 ROUNDS=3
#
# Needs redis-server and redis-cli (scripts/setup.sh installs them). Run it on a quiet
# machine.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

KEYS="${KEYS:-1000000}"
ROUNDS="${ROUNDS:-3}"

for tool in redis-server redis-cli python3; do
    command -v "$tool" >/dev/null || { echo "compare-persistence: $tool is missing (bash scripts/setup.sh)" >&2; exit 2; }
done

if [ -z "${MEMDI_SERVER_BIN:-}" ]; then
    cargo build --release --quiet -p memdi-node --bin memdi-server
    MEMDI_SERVER_BIN=target/release/memdi-server
fi

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

now_ms() {
    python3 -c 'import time; print(int(time.monotonic() * 1000))'
}

work="$(mktemp -d)"
redis_pid=""
memdi_pid=""
cleanup() {
    for pid in $redis_pid $memdi_pid; do
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

redis_port="$(free_port)"
memdi_port="$(free_port)"
memdi_client_port="$(free_port)"
memdi_peer_port="$(free_port)"
mkdir -p "$work/redis" "$work/memdi"

start_redis() {
    redis-server --bind 127.0.0.1 --port "$redis_port" --save '' --appendonly no \
        --dir "$work/redis" --dbfilename dump.rdb --daemonize no >>"$work/redis.log" 2>&1 &
    redis_pid=$!
}

start_memdi() {
    "$MEMDI_SERVER_BIN" --resp-addr "127.0.0.1:$memdi_port" \
        --client-addr "127.0.0.1:$memdi_client_port" --peer-addr "127.0.0.1:$memdi_peer_port" \
        --data-dir "$work/memdi" --snapshot-every 0 --fsync no \
        --max-keys $((KEYS + KEYS / 10)) --max-memory $((KEYS * 256)) >>"$work/memdi.log" 2>&1 &
    memdi_pid=$!
}

# Waits (bounded: 120 s) until PONG; prints the milliseconds since $1.
wait_ready() {
    local port="$1" since="$2"
    for _ in $(seq 1 12000); do
        if [ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" = PONG ]; then
            echo $(($(now_ms) - since))
            return 0
        fi
        sleep 0.01
    done
    echo "compare-persistence: nothing answers PING on port $port" >&2
    cat "$work"/*.log >&2
    exit 1
}

fill() {
    local port="$1"
    python3 - "$KEYS" <<'PY' | redis-cli -h 127.0.0.1 -p "$port" --pipe >/dev/null
import sys
keys = int(sys.argv[1])
value = b"v" * 64
out = sys.stdout.buffer
for i in range(keys):
    key = b"key:%012d" % i
    out.write(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(key), key, len(value), value))
PY
    local count
    count="$(redis-cli -h 127.0.0.1 -p "$port" dbsize)"
    [ "$count" = "$KEYS" ] || { echo "compare-persistence: port $port holds $count keys, not $KEYS" >&2; exit 1; }
}

start_redis
wait_ready "$redis_port" "$(now_ms)" >/dev/null
start_memdi
wait_ready "$memdi_port" "$(now_ms)" >/dev/null
echo "filling both servers with $KEYS keys (16-byte keys, 64-byte values)"
fill "$redis_port"
fill "$memdi_port"

echo "$(redis-server --version | cut -d' ' -f1-3); memdi-server at $(git rev-parse --short HEAD 2>/dev/null || echo '?'); $(nproc) cores; $ROUNDS rounds, servers alternating"
results="$work/results.csv"
for round in $(seq 1 "$ROUNDS"); do
    # Redis: SAVE, SHUTDOWN NOSAVE, start, load.
    started="$(now_ms)"
    redis-cli -h 127.0.0.1 -p "$redis_port" save >/dev/null
    save_ms=$(($(now_ms) - started))
    redis-cli -h 127.0.0.1 -p "$redis_port" shutdown nosave >/dev/null 2>&1 || true
    wait "$redis_pid" 2>/dev/null || true
    started="$(now_ms)"
    start_redis
    ready_ms="$(wait_ready "$redis_port" "$started")"
    own_ms="$(grep 'DB loaded from disk' "$work/redis.log" | tail -1 | sed -E 's/.*disk: ([0-9.]+) seconds.*/\1/' | python3 -c 'import sys; print(round(float(sys.stdin.read()) * 1000))')"
    echo "redis,$save_ms,$ready_ms,$own_ms" >>"$results"
    printf '  round %s  redis  SAVE %6d ms   restart to PONG %6d ms   load (own figure) %6d ms\n' "$round" "$save_ms" "$ready_ms" "$own_ms"

    # memdi: SAVE, kill -9, start, load.
    started="$(now_ms)"
    redis-cli -h 127.0.0.1 -p "$memdi_port" save >/dev/null
    save_ms=$(($(now_ms) - started))
    kill -9 "$memdi_pid"
    wait "$memdi_pid" 2>/dev/null || true
    started="$(now_ms)"
    start_memdi
    ready_ms="$(wait_ready "$memdi_port" "$started")"
    own_ms="$(grep 'loaded snapshot' "$work/memdi.log" | tail -1 | sed -E 's/.* in ([0-9]+) ms.*/\1/')"
    echo "memdi,$save_ms,$ready_ms,$own_ms" >>"$results"
    printf '  round %s  memdi  SAVE %6d ms   restart to PONG %6d ms   load (own figure) %6d ms\n' "$round" "$save_ms" "$ready_ms" "$own_ms"
done
for server in redis memdi; do
    count="$(redis-cli -h 127.0.0.1 -p "$([ $server = redis ] && echo "$redis_port" || echo "$memdi_port")" dbsize)"
    [ "$count" = "$KEYS" ] || { echo "compare-persistence: $server holds $count keys after the restarts, not $KEYS" >&2; exit 1; }
done
echo "snapshot files: Redis $(stat -c %s "$work/redis/dump.rdb") bytes, memdi $(stat -c %s "$work/memdi/snapshot.memdi") bytes"

python3 - "$results" <<'PY'
import csv, statistics, sys
runs = {}
for server, save, ready, own in csv.reader(open(sys.argv[1])):
    runs.setdefault(server, []).append((int(save), int(ready), int(own)))
med = {s: [statistics.median(r[i] for r in runs[s]) for i in range(3)] for s in runs}
print()
print(f"{'median over rounds':<28} {'memdi ms':>9} {'Redis ms':>9} {'ratio':>6}")
for i, what in enumerate(["SAVE", "restart to first PONG", "load (server's own figure)"]):
    m, r = med["memdi"][i], med["redis"][i]
    print(f"{what:<28} {m:>9.0f} {r:>9.0f} {m / r if r else float('nan'):>6.2f}")
PY
