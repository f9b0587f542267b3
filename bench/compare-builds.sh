#!/usr/bin/env bash
# Two memdi-server builds and Redis through the RESP port, in alternation, with the same
# client and settings as compare-redis.sh: for each of ROUNDS rounds (default 2), a fresh
# memdi BEFORE, a fresh memdi AFTER, then Redis, each measured by
# `redis-benchmark -c 50 -n REQUESTS -d 64 -t set,get,incr -P 1` and `-P 16`. Prints the
# medians over the rounds, both builds' ratios to Redis and the p50/p99 latencies.
#
#   BEFORE=/path/to/old/memdi-server AFTER=target/release/memdi-server bash bench/compare-builds.sh
#
# Loopback only; every server is stopped on exit. Check `uptime` first: the servers and the
# client share the machine's cores.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

: "${BEFORE:?BEFORE=<memdi-server binary> is required}"
: "${AFTER:?AFTER=<memdi-server binary> is required}"
ROUNDS="${ROUNDS:-2}"
REQUESTS="${REQUESTS:-500000}"

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

wait_ready() {
    for _ in $(seq 1 200); do
        [ "$(redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null)" = PONG ] && return 0
        sleep 0.05
    done
    echo "compare-builds: nothing answers PING on port $1" >&2
    exit 1
}

redis_port="$(free_port)"
redis-server --bind 127.0.0.1 --port "$redis_port" --save '' --appendonly no \
    --dir "$work" --daemonize no >"$work/redis.log" 2>&1 &
pids+=("$!")
wait_ready "$redis_port"

echo "start: $(uptime)"
results="$work/results.csv"
for round in $(seq 1 "$ROUNDS"); do
    for who in before after redis; do
        port="$redis_port"
        server=""
        if [ "$who" != redis ]; then
            binary="$BEFORE"
            [ "$who" = after ] && binary="$AFTER"
            port="$(free_port)"
            "$binary" --resp-addr "127.0.0.1:$port" --client-addr "127.0.0.1:$(free_port)" \
                --peer-addr "127.0.0.1:$(free_port)" --data-dir "$work/$who-$round" \
                --snapshot-every 0 >"$work/$who-$round.log" 2>&1 &
            server="$!"
            pids+=("$server")
            wait_ready "$port"
        fi
        for pipeline in 1 16; do
            redis-benchmark -h 127.0.0.1 -p "$port" -c 50 -n "$REQUESTS" -d 64 -P "$pipeline" \
                -t set,get,incr --csv 2>/dev/null | tr -d '"' | grep -v '^test,' |
                while IFS=, read -r test rps _avg _min p50 _p95 p99 _max; do
                    echo "$who,$pipeline,$test,$rps,$p50,$p99"
                    printf '  round %s  %-6s -P %-2s %-4s %10.0f req/s  p50 %6.3f ms  p99 %6.3f ms\n' \
                        "$round" "$who" "$pipeline" "$test" "$rps" "$p50" "$p99" >&2
                done >>"$results"
        done
        if [ -n "$server" ]; then
            kill "$server"
            wait "$server" 2>/dev/null || true
        fi
    done
done
echo "end: $(uptime)"

python3 - "$results" <<'PY'
import csv, statistics, sys
runs = {}
for who, pipeline, test, rps, p50, p99 in csv.reader(open(sys.argv[1])):
    runs.setdefault((test, int(pipeline), who), []).append((float(rps), float(p50), float(p99)))
print()
print("| test | pipeline | memdi before req/s | memdi after req/s | Redis req/s | before/Redis | after/Redis | before p50 / p99 ms | after p50 / p99 ms | Redis p50 / p99 ms |")
print("|---|---|---|---|---|---|---|---|---|---|")
for pipeline in (1, 16):
    for test in ("GET", "SET", "INCR"):
        m = {w: [statistics.median(x[i] for x in runs[(test, pipeline, w)]) for i in range(3)] for w in ("before", "after", "redis")}
        b, a, r = m["before"], m["after"], m["redis"]
        print(f"| {test} | {pipeline} | {b[0]:,.0f} | {a[0]:,.0f} | {r[0]:,.0f} | {b[0] / r[0]:.2f} | {a[0] / r[0]:.2f} | {b[1]:.3f} / {b[2]:.3f} | {a[1]:.3f} / {a[2]:.3f} | {r[1]:.3f} / {r[2]:.3f} |")
PY
