#!/usr/bin/env bash
# memdi's RESP port against Redis, with the same client (redis-benchmark) on the same machine.
#
# Starts redis-server and one memdi-server node on 127.0.0.1, neither persisting anything
# (Redis: no RDB, no AOF; memdi: --persistence none, no log, no snapshots), then runs
# redis-benchmark against each in alternation, ROUNDS times (default 2), for SET, GET and
# INCR with 50 clients, 500,000 requests and 64-byte values, without pipelining (-P 1) and
# with 16 commands per pipeline (-P 16). Prints every run, then per test the memdi/Redis
# throughput ratio (medians over the rounds) and both servers' p50/p99 latencies. Loopback
# only; both servers are stopped on exit.
#
#   bash bench/compare-redis.sh                # ROUNDS=2 REQUESTS=500000 CLIENTS=50
#
# Needs redis-server and redis-benchmark (scripts/setup.sh installs them). Do not run it
# while something heavy (a build) runs on the machine: both servers share its cores with the
# benchmark client.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

ROUNDS="${ROUNDS:-2}"
REQUESTS="${REQUESTS:-500000}"
CLIENTS="${CLIENTS:-50}"
DATA_BYTES=64
TESTS=set,get,incr

for tool in redis-server redis-benchmark redis-cli python3; do
    command -v "$tool" >/dev/null || { echo "compare-redis: $tool is missing (bash scripts/setup.sh)" >&2; exit 2; }
done

if [ -z "${MEMDI_SERVER_BIN:-}" ]; then
    cargo build --release --quiet -p memdi-node --bin memdi-server
    MEMDI_SERVER_BIN=target/release/memdi-server
fi

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

work="$(mktemp -d)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

redis_port="$(free_port)"
redis-server --bind 127.0.0.1 --port "$redis_port" --save '' --appendonly no \
    --dir "$work" --daemonize no >"$work/redis.log" 2>&1 &
pids+=("$!")

memdi_port="$(free_port)"
"$MEMDI_SERVER_BIN" --resp-addr "127.0.0.1:$memdi_port" \
    --client-addr "127.0.0.1:$(free_port)" --peer-addr "127.0.0.1:$(free_port)" \
    --data-dir "$work/memdi" --persistence none >"$work/memdi.log" 2>&1 &
pids+=("$!")

wait_ready() {
    local port="$1"
    for _ in $(seq 1 200); do
        [ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" = PONG ] && return 0
        sleep 0.05
    done
    echo "compare-redis: nothing answers PING on port $port" >&2
    cat "$work"/*.log >&2
    exit 1
}
wait_ready "$redis_port"
wait_ready "$memdi_port"

echo "redis-benchmark -c $CLIENTS -n $REQUESTS -d $DATA_BYTES -t $TESTS -P {1,16} --csv; $ROUNDS rounds, servers alternating"
echo "$(redis-server --version | cut -d' ' -f1-3); memdi-server at $(git rev-parse --short HEAD 2>/dev/null || echo '?'); $(nproc) cores"
results="$work/results.csv"
for round in $(seq 1 "$ROUNDS"); do
    for pipeline in 1 16; do
        for server in redis memdi; do
            port="$redis_port"
            [ "$server" = memdi ] && port="$memdi_port"
            redis-benchmark -h 127.0.0.1 -p "$port" -c "$CLIENTS" -n "$REQUESTS" -d "$DATA_BYTES" \
                -P "$pipeline" -t "$TESTS" --csv 2>/dev/null | tr -d '"' | grep -v '^test,' |
                while IFS=, read -r test rps _avg _min p50 _p95 p99 _max; do
                    echo "$server,$pipeline,$test,$rps,$p50,$p99"
                    printf '  round %s  %-5s -P %-2s %-4s %10.0f req/s  p50 %6.3f ms  p99 %6.3f ms\n' \
                        "$round" "$server" "$pipeline" "$test" "$rps" "$p50" "$p99" >&2
                done >>"$results"
        done
    done
done

python3 - "$results" <<'PY'
import csv, statistics, sys
runs = {}
for server, pipeline, test, rps, p50, p99 in csv.reader(open(sys.argv[1])):
    runs.setdefault((test, int(pipeline), server), []).append((float(rps), float(p50), float(p99)))
print()
print(f"{'test':<5} {'-P':>3} {'memdi req/s':>12} {'Redis req/s':>12} {'ratio':>6}   {'memdi p50/p99 ms':>17}   {'Redis p50/p99 ms':>17}")
for (test, pipeline) in sorted({(t, p) for t, p, _ in runs}, key=lambda k: (k[1], k[0])):
    med = {s: [statistics.median(x[i] for x in runs[(test, pipeline, s)]) for i in range(3)] for s in ("memdi", "redis")}
    m, r = med["memdi"], med["redis"]
    print(f"{test:<5} {pipeline:>3} {m[0]:>12.0f} {r[0]:>12.0f} {m[0] / r[0]:>6.2f}   {m[1]:>7.3f} / {m[2]:<7.3f}   {r[1]:>7.3f} / {r[2]:<7.3f}")
PY
