#!/usr/bin/env bash
# memdi's native protocol, one node and three, beside Redis on the same machine in the same
# run: throughput and latency (`memdi bench`, redis-benchmark), leader failover time, and
# memory per key at one million keys. Prints every figure, then the tables and whether each
# target is met (it never fails on a figure).
#
#   bash bench/cluster-bench.sh
#   CLIENTS=50 REQUESTS_P1=200000 REQUESTS_P16=1000000 TRIALS=20 KEYS=1000000 bash bench/cluster-bench.sh
#
# What runs (everything on 127.0.0.1, data in a temporary directory removed on exit, every
# process this script started killed on exit, every wait bounded):
#  1. One memdi-server node and redis-server (`--save '' --appendonly no`) side by side.
#     memdi with `--snapshot-every 0 --fsync no` (no disk work on the request path beyond
#     the OS write of the log). `memdi bench`: SET with ack leader and quorum, GET
#     (linearizable), 50 clients, 16-byte keys, 64-byte values, 10,000 distinct keys,
#     pipeline 1 and 16. redis-benchmark: SET and GET with the same clients, pipeline, value
#     size and key size (`-r 10000`: `key:` and 12 digits). The protocols differ (memdi's
#     postcard frames against RESP), so the ratio compares two servers each with its own
#     client; bench/compare-redis.sh compares both over RESP with one client.
#  2. One node with the default persistence (`--fsync everysec`, snapshots every 60 s).
#  3. Three nodes with `--cluster` (`--snapshot-every 0 --fsync no`), `memdi bench` through
#     the leader (and one row through a follower, which forwards).
#  4. Memory per key: RSS of a fresh memdi-server before and after KEYS SETs of distinct
#     16-byte keys with 64-byte values (VmRSS from /proc: pages touched; the store is one
#     allocation sized by --max-keys/--max-memory whose untouched pages cost nothing), the
#     same after a restart from a snapshot and with `--persistence none`, and the same for a
#     fresh redis-server loaded with `redis-cli --pipe` (RSS and INFO's
#     used_memory).
#  5. Leader failover: TRIALS kill -9's of the leader of a three-node cluster under a
#     continuous quorum write load (std-node/examples/failover_bench.rs).
#
# Installs redis-server and redis-tools with apt-get if they are missing. Builds --release
# into $CARGO_TARGET_DIR (default target/). The machine should be quiet: the servers and the
# benchmark clients share its cores; the load average is printed at each step.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CLIENTS="${CLIENTS:-50}"
REQUESTS_P1="${REQUESTS_P1:-200000}"
REQUESTS_P16="${REQUESTS_P16:-1000000}"
TRIALS="${TRIALS:-20}"
KEYS="${KEYS:-1000000}"
KEY_BYTES=16
VALUE_BYTES=64
KEYSPACE=10000

say() { echo "cluster-bench: $*" >&2; }
load() { cut -d' ' -f1-3 /proc/loadavg; }

if ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null ||
    ! command -v redis-cli >/dev/null; then
    say "installing redis-server and redis-tools"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server redis-tools >/dev/null
fi
command -v python3 >/dev/null || { say "python3 is missing"; exit 2; }

target="${CARGO_TARGET_DIR:-target}"
nice -n 10 cargo build --release --quiet -p memdi-node --bins --example failover_bench
SERVER="$target/release/memdi-server"
MEMDI="$target/release/memdi"
FAILOVER="$target/release/examples/failover_bench"

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

work="$(mktemp -d)"
pids=()
cleanup() {
    local pid
    # The failover program writes the pid of each node it runs; it kills them itself, unless
    # it was killed first.
    for file in "$work"/*.pid; do
        if [ -e "$file" ]; then kill -9 "$(cat "$file")" 2>/dev/null || true; fi
    done
    for pid in "${pids[@]}"; do
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# stop PID: SIGKILL (nothing here needs a final snapshot) and reap.
stop() {
    local pid="$1" kept=() p
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    for p in "${pids[@]}"; do [ "$p" = "$pid" ] || kept+=("$p"); done
    pids=("${kept[@]}")
}

# start_memdi NAME CLIENT_PORT PEER_PORT [FLAGS...]: starts a node; its pid in $last_pid.
start_memdi() {
    local name="$1" cport="$2" pport="$3"
    shift 3
    "$SERVER" --client-addr "127.0.0.1:$cport" --peer-addr "127.0.0.1:$pport" \
        --data-dir "$work/$name" "$@" >"$work/$name.log" 2>&1 &
    last_pid="$!"
    pids+=("$last_pid")
}

wait_memdi() {
    local port="$1"
    for _ in $(seq 1 200); do
        "$MEMDI" --addr "127.0.0.1:$port" ping >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    say "no memdi node answers on port $port"
    tail -n 20 "$work"/*.log >&2
    exit 1
}

wait_redis() {
    local port="$1"
    for _ in $(seq 1 200); do
        [ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" = PONG ] && return 0
        sleep 0.05
    done
    say "redis-server does not answer on port $port"
    exit 1
}

# leader_port PORT...: the client port of the node every given node names as leader
# (bounded: 15 s).
leader_port() {
    local port status id
    for _ in $(seq 1 150); do
        for port in "$@"; do
            status="$("$MEMDI" --addr "127.0.0.1:$port" cluster status --json 2>/dev/null)" || continue
            id="$(python3 -c 'import json, sys; s = json.loads(sys.argv[1]); print(s["node_id"] if s["role"] == "leader" else "")' "$status")"
            if [ -n "$id" ]; then
                echo "$port"
                return 0
            fi
        done
        sleep 0.1
    done
    say "no leader elected within 15 s"
    exit 1
}

rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

results="$work/results.csv"
: >"$results"

# bench_memdi SETUP PORT PIPELINE OP ACK: one `memdi bench` run, recorded.
bench_memdi() {
    local setup="$1" port="$2" pipeline="$3" op="$4" ack="$5" requests line
    requests="$REQUESTS_P1"
    [ "$pipeline" -gt 1 ] && requests="$REQUESTS_P16"
    line="$(timeout 600 "$MEMDI" --addr "127.0.0.1:$port" bench --csv --clients "$CLIENTS" \
        --requests "$requests" --pipeline "$pipeline" --key-size "$KEY_BYTES" \
        --value-size "$VALUE_BYTES" --keyspace "$KEYSPACE" --op "$op" --ack "$ack")"
    echo "memdi,$setup,$line" >>"$results"
    say "memdi $setup: $line  (load $(load))"
}

# bench_redis PORT PIPELINE: redis-benchmark SET and GET, recorded (latencies in µs).
bench_redis() {
    local port="$1" pipeline="$2" requests="$REQUESTS_P1"
    [ "$pipeline" -gt 1 ] && requests="$REQUESTS_P16"
    timeout 600 redis-benchmark -h 127.0.0.1 -p "$port" -c "$CLIENTS" -n "$requests" \
        -d "$VALUE_BYTES" -r "$KEYSPACE" -P "$pipeline" -t set,get --csv 2>/dev/null |
        tr -d '"' | grep -v '^test,' |
        while IFS=, read -r test rps _avg _min p50 _p95 p99 max; do
            test="$(echo "$test" | tr '[:upper:]' '[:lower:]')"
            echo "redis,1node,$test,-,$CLIENTS,$pipeline,$requests,0,$rps,$(python3 -c "print(round($p50*1000), round($p99*1000), '', round($max*1000), sep=',')")"
        done | tee -a "$results" | sed 's/^/cluster-bench: /' >&2
}

say "$(redis-server --version | cut -d' ' -f1-3); memdi at $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ' (with local changes)'); $(nproc) cores; load $(load)"
echo "start,$(date -u +%Y-%m-%dT%H:%M:%SZ),$(load)" >>"$results"

# 1. One node (no snapshots, no fsync) beside Redis.
redis_port="$(free_port)"
redis-server --bind 127.0.0.1 --port "$redis_port" --save '' --appendonly no \
    --dir "$work" --daemonize no >"$work/redis.log" 2>&1 &
redis_pid="$!"
pids+=("$redis_pid")
one_port="$(free_port)"
start_memdi one "$one_port" "$(free_port)" --snapshot-every 0 --fsync no
one_pid="$last_pid"
wait_redis "$redis_port"
wait_memdi "$one_port"
for pipeline in 1 16; do
    bench_redis "$redis_port" "$pipeline"
    bench_memdi 1node "$one_port" "$pipeline" set leader
    bench_memdi 1node "$one_port" "$pipeline" set quorum
    bench_memdi 1node "$one_port" "$pipeline" get leader
done
stop "$one_pid"
stop "$redis_pid"

# 2. One node with the default persistence settings.
def_port="$(free_port)"
start_memdi defaults "$def_port" "$(free_port)"
def_pid="$last_pid"
wait_memdi "$def_port"
for pipeline in 1 16; do
    bench_memdi 1node-defaults "$def_port" "$pipeline" set leader
done
stop "$def_pid"

# 3. Three nodes.
cports=() cluster="" cpids=()
for id in 1 2 3; do
    cports+=("$(free_port)")
    pport="$(free_port)"
    cluster="${cluster:+$cluster,}$id=127.0.0.1:$pport"
    eval "pport_$id=$pport"
done
for id in 1 2 3; do
    eval "pport=\$pport_$id"
    start_memdi "n$id" "${cports[$((id - 1))]}" "$pport" --node-id "$id" --cluster "$cluster" \
        --snapshot-every 0 --fsync no
    cpids+=("$last_pid")
done
for port in "${cports[@]}"; do wait_memdi "$port"; done
lport="$(leader_port "${cports[@]}")"
fport=""
for port in "${cports[@]}"; do [ "$port" = "$lport" ] || fport="$port"; done
say "3 nodes: leader on client port $lport, a follower on $fport"
for pipeline in 1 16; do
    bench_memdi 3node-leader "$lport" "$pipeline" set leader
    bench_memdi 3node-leader "$lport" "$pipeline" set quorum
    bench_memdi 3node-leader "$lport" "$pipeline" get leader
done
bench_memdi 3node-follower "$fport" 16 set quorum
for pid in "${cpids[@]}"; do stop "$pid"; done

# 4. Memory per key at KEYS keys.
mem_port="$(free_port)"
# Starts memdi-server NAME on mem_port with the flags given and KEYS keys' room, then loads
# KEYS distinct keys through it; sets mem_pid, empty_kb, loaded_kb and memdi_keys.
load_memdi() {
    local name="$1"
    shift
    start_memdi "$name" "$mem_port" "$(free_port)" "$@" \
        --max-keys "$KEYS" --max-memory $((KEYS * 128))
    mem_pid="$last_pid"
    wait_memdi "$mem_port"
    sleep 1
    empty_kb="$(rss_kb "$mem_pid")"
    timeout 600 "$MEMDI" --addr "127.0.0.1:$mem_port" bench --csv --clients "$CLIENTS" \
        --requests "$KEYS" --keyspace "$KEYS" --pipeline 16 --key-size "$KEY_BYTES" \
        --value-size "$VALUE_BYTES" --op set --ack leader >"$work/load-$name.csv"
    sleep 1
    loaded_kb="$(rss_kb "$mem_pid")"
    memdi_keys="$("$MEMDI" --addr "127.0.0.1:$mem_port" dbsize)"
}
load_memdi mem --snapshot-every 0 --fsync no
memdi_empty="$empty_kb"
memdi_loaded="$loaded_kb"
# The mappings with the most resident memory, size and resident MiB (the store and the
# in-memory log are anonymous mappings, which the kernel may merge when they are adjacent).
smaps() {
    python3 - "$1" <<'PY'
import sys
maps, cur = [], None
for line in open(f"/proc/{sys.argv[1]}/smaps"):
    parts = line.split()
    if "-" in parts[0] and not parts[0].endswith(":"):
        cur = {"name": parts[5] if len(parts) > 5 else "[anon]"}
        maps.append(cur)
    elif parts[0] in ("Size:", "Rss:"):
        cur[parts[0][:-1]] = int(parts[1])
for m in sorted(maps, key=lambda m: -m.get("Rss", 0))[:5]:
    print(f"  mapping {m['name']:<14} size {m['Size'] / 1024:8.1f} MiB  resident {m.get('Rss', 0) / 1024:8.1f} MiB")
PY
}
smaps "$mem_pid" >"$work/smaps.txt"
say "memdi: RSS empty $memdi_empty kB, loaded $memdi_loaded kB, $memdi_keys keys (load $(load))"
cat "$work/smaps.txt" >&2
# The same keys without the in-memory log's pages: snapshot, restart from it (the store is
# filled by the snapshot decoder and the log is empty).
"$MEMDI" --addr "127.0.0.1:$mem_port" save >&2
stop "$mem_pid"
echo "mem,memdi,$memdi_keys,$memdi_empty,$memdi_loaded,," >>"$results"
start_memdi mem "$mem_port" "$(free_port)" --snapshot-every 0 --fsync no \
    --max-keys "$KEYS" --max-memory $((KEYS * 128))
mem_pid="$last_pid"
wait_memdi "$mem_port"
sleep 1
memdi_restored="$(rss_kb "$mem_pid")"
memdi_keys="$("$MEMDI" --addr "127.0.0.1:$mem_port" dbsize)"
say "memdi restarted from its snapshot: RSS $memdi_restored kB, $memdi_keys keys"
smaps "$mem_pid" | sed 's/^/  restarted: /' >>"$work/smaps.txt"
stop "$mem_pid"
echo "mem,memdi-restarted,$memdi_keys,$memdi_empty,$memdi_restored,," >>"$results"
# The same load on a node that keeps nothing on disk (--persistence none, as Redis below
# with neither RDB nor AOF), whose in-memory log is a small ring (4 MiB by default).
load_memdi mem-diskless --persistence none
say "memdi --persistence none: RSS empty $empty_kb kB, loaded $loaded_kb kB, $memdi_keys keys"
smaps "$mem_pid" | sed 's/^/  --persistence none: /' >>"$work/smaps.txt"
stop "$mem_pid"
echo "mem,memdi-diskless,$memdi_keys,$empty_kb,$loaded_kb,," >>"$results"

rmem_port="$(free_port)"
redis-server --bind 127.0.0.1 --port "$rmem_port" --save '' --appendonly no \
    --dir "$work" --daemonize no >"$work/redis-mem.log" 2>&1 &
rmem_pid="$!"
pids+=("$rmem_pid")
wait_redis "$rmem_port"
sleep 1
redis_empty="$(rss_kb "$rmem_pid")"
redis_used_empty="$(redis-cli -p "$rmem_port" info memory | tr -d '\r' | awk -F: '/^used_memory:/ { print $2 }')"
python3 - "$KEYS" "$VALUE_BYTES" <<'PY' | timeout 600 redis-cli -h 127.0.0.1 -p "$rmem_port" --pipe >/dev/null
import sys
keys, size = int(sys.argv[1]), int(sys.argv[2])
value = b"x" * size
out = sys.stdout.buffer
for n in range(keys):
    key = b"key:%012d" % n
    out.write(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(key), key, size, value))
PY
sleep 1
redis_loaded="$(rss_kb "$rmem_pid")"
redis_used_loaded="$(redis-cli -p "$rmem_port" info memory | tr -d '\r' | awk -F: '/^used_memory:/ { print $2 }')"
redis_keys="$(redis-cli -p "$rmem_port" dbsize)"
say "redis: RSS empty $redis_empty kB, loaded $redis_loaded kB; used_memory $redis_used_empty -> $redis_used_loaded B; $redis_keys keys (load $(load))"
stop "$rmem_pid"
echo "mem,redis,$redis_keys,$redis_empty,$redis_loaded,$redis_used_empty,$redis_used_loaded" >>"$results"

# 5. Leader failover.
say "failover: $TRIALS trials (load $(load))"
timeout 900 "$FAILOVER" "$SERVER" "$work" "$TRIALS" | tee "$work/failover.txt" >&2
echo "end,$(date -u +%Y-%m-%dT%H:%M:%SZ),$(load)" >>"$results"

python3 - "$results" "$work/failover.txt" "$work/smaps.txt" <<'PY'
import csv, sys
rows = list(csv.reader(open(sys.argv[1])))
start = next(r for r in rows if r[0] == "start")
end = next(r for r in rows if r[0] == "end")
print(f"\nrun {start[1]} to {end[1]}; load average (1, 5, 15 min) at start {start[2]}, at end {end[2]}")
bench = [r for r in rows if r[0] in ("memdi", "redis")]
def ms(us):
    return f"{int(us) / 1000:.3f}" if us else "-"
print("\n| server | setup | op | ack | pipeline | req/s | p50 ms | p99 ms | p99.9 ms | errors |")
print("|---|---|---|---|---|---|---|---|---|---|")
# memdi rows carry one more column (retries), which the table leaves out.
for server, setup, op, ack, clients, pipeline, n, errors, rps, p50, p99, p999, mx in (r[:13] for r in bench):
    print(f"| {server} | {setup} | {op.upper()} | {ack} | {pipeline} | {float(rps):,.0f} | {ms(p50)} | {ms(p99)} | {ms(p999)} | {errors} |")
def rate(server, setup, op, ack, pipeline):
    for r in bench:
        if r[:4] == [server, setup, op, ack] and r[5] == str(pipeline):
            return float(r[8])
    return None
print("\n| op | pipeline | memdi 1 node req/s | Redis req/s | memdi/Redis |")
print("|---|---|---|---|---|")
for pipeline in (1, 16):
    for op in ("set", "get"):
        m, r = rate("memdi", "1node", op, "leader", pipeline), rate("redis", "1node", op, "-", pipeline)
        if m and r:
            print(f"| {op.upper()} | {pipeline} | {m:,.0f} | {r:,.0f} | {m / r:.2f} |")
print("\ntargets:")
one = rate("memdi", "1node", "set", "leader", 1)
if one:
    print(f"  one node, SET ack leader, pipeline 1 >= 100,000 req/s: {one:,.0f} -> {'met' if one >= 100_000 else 'NOT met'}")
for pipeline in (1, 16):
    q, l = rate("memdi", "3node-leader", "set", "quorum", pipeline), rate("memdi", "1node", "set", "leader", pipeline)
    if q and l:
        print(f"  3-node quorum SET >= half of one node's leader SET, pipeline {pipeline}: {q:,.0f} vs {l:,.0f} ({q / l:.2f}) -> {'met' if q >= l / 2 else 'NOT met'}")
print("\nmemory per key:")
for r in rows:
    if r[0] != "mem":
        continue
    _, server, keys, empty, loaded, used_empty, used_loaded = r
    keys = int(keys)
    line = f"  {server}: {keys:,} keys; RSS {int(empty) / 1024:.1f} MiB empty, {int(loaded) / 1024:.1f} MiB loaded: {(int(loaded) - int(empty)) * 1024 / keys:.1f} B/key"
    if used_loaded:
        line += f"; used_memory {(int(used_loaded) - int(used_empty)) / keys:.1f} B/key"
    print(line)
print(open(sys.argv[3]).read().rstrip())
print("\nfailover:")
for line in open(sys.argv[2]):
    if line.startswith("failover") or line.startswith("the leader's log"):
        print("  " + line.rstrip())
        if "open-loop" in line:
            median = float(line.split("median ")[1].split(" ms")[0])
            print(f"  target: median failover under 1 s: {median:.1f} ms -> {'met' if median < 1000 else 'NOT met'}")
PY
