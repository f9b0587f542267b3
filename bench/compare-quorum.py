#!/usr/bin/env python3
"""Majority-acknowledged writes: a 3-node memdi cluster beside Redis with one replica.

Starts, on 127.0.0.1, a Redis master with one replica (no persistence) and three
memdi-server nodes in one cluster (RESP ports, --snapshot-every 0, --fsync no). Against each
leader in alternation, ROUNDS times (default 3), CLIENTS processes (default 16) each send
`SET key value` followed by `WAIT 1 0` as one pipelined round trip, and wait for both answers
before the next: a write counts once two copies exist (Redis: the master and its replica,
as issue 5 asks; memdi: a majority of its three voters, since it maps WAIT onto its quorum
acknowledgement: a confirmed read round after the write has committed). Each run lasts
SECONDS (default 5). Prints every run, then the medians: throughput, latency p50/p99, and the
memdi/Redis throughput ratio. The same client code drives both servers.

    python3 bench/compare-quorum.py            # ROUNDS=3 CLIENTS=16 SECONDS=5

Needs redis-server and redis-cli (scripts/setup.sh) and a built memdi-server
(MEMDI_SERVER_BIN, default target/release/memdi-server; built if missing). Loopback only;
every process it starts is killed on exit. Run it on a quiet machine.
"""

import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROUNDS = int(os.environ.get("ROUNDS", "3"))
CLIENTS = int(os.environ.get("CLIENTS", "16"))
SECONDS = float(os.environ.get("SECONDS", "5"))
VALUE = b"v" * 64


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(*args):
    out = b"*%d\r\n" % len(args)
    for arg in args:
        arg = arg if isinstance(arg, bytes) else str(arg).encode()
        out += b"$%d\r\n%s\r\n" % (len(arg), arg)
    return out


def read_reply(stream):
    """Reads one RESP2 reply; returns it (bytes for simple/bulk, int, list, or an Exception)."""
    line = stream.readline()
    if not line:
        raise ConnectionError("closed")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest
    if kind == b"-":
        return RuntimeError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        length = int(rest)
        if length < 0:
            return None
        data = stream.read(length + 2)
        return data[:-2]
    if kind == b"*":
        return [read_reply(stream) for _ in range(int(rest))]
    raise ValueError(f"unexpected reply {line!r}")


def ask(port, *args):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(command(*args))
        return read_reply(s.makefile("rb"))


def wait_ready(port, limit_s=30):
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            if ask(port, "PING") == b"PONG":
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"compare-quorum: nothing answers PING on port {port}")


def client(port, name, seconds, results):
    """One closed-loop writer: SET then WAIT 1 0, pipelined; records each latency."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        stream = s.makefile("rb")
        latencies = []
        errors = 0
        end = time.monotonic() + seconds
        i = 0
        while time.monotonic() < end:
            key = b"%s:%d" % (name.encode(), i)
            i += 1
            started = time.perf_counter()
            s.sendall(command("SET", key, VALUE) + command("WAIT", 1, 0))
            set_reply = read_reply(stream)
            wait_reply = read_reply(stream)
            took = time.perf_counter() - started
            if set_reply == b"OK" and isinstance(wait_reply, int) and wait_reply >= 1:
                latencies.append(took)
            else:
                errors += 1
        results.put((latencies, errors))


def run(port, tag):
    results = multiprocessing.Queue()
    procs = [
        multiprocessing.Process(target=client, args=(port, f"{tag}{c}", SECONDS, results))
        for c in range(CLIENTS)
    ]
    for p in procs:
        p.start()
    latencies, errors = [], 0
    for _ in procs:
        got, errs = results.get(timeout=SECONDS + 60)
        latencies.extend(got)
        errors += errs
    for p in procs:
        p.join(timeout=10)
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000
    return len(latencies) / SECONDS, pick(0.5), pick(0.99), errors


def main():
    server_bin = os.environ.get("MEMDI_SERVER_BIN", "target/release/memdi-server")
    if not os.path.exists(server_bin):
        subprocess.run(
            ["cargo", "build", "--release", "--quiet", "-p", "memdi-node", "--bin", "memdi-server"],
            check=True,
        )
    work = tempfile.mkdtemp()
    procs = []
    try:
        redis_ports = [free_port() for _ in range(2)]
        for i, port in enumerate(redis_ports):
            args = ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                    "--appendonly", "no", "--dir", work, "--dbfilename", f"r{i}.rdb"]
            if i > 0:
                args += ["--replicaof", "127.0.0.1", str(redis_ports[0])]
            procs.append(subprocess.Popen(args, stdout=open(f"{work}/redis{i}.log", "w"),
                                          stderr=subprocess.STDOUT))
        peer_ports = [free_port() for _ in range(3)]
        resp_ports = [free_port() for _ in range(3)]
        cluster = ",".join(f"{i + 1}=127.0.0.1:{p}" for i, p in enumerate(peer_ports))
        for i in range(3):
            args = [server_bin, "--node-id", str(i + 1), "--cluster", cluster,
                    "--peer-addr", f"127.0.0.1:{peer_ports[i]}",
                    "--client-addr", f"127.0.0.1:{free_port()}",
                    "--resp-addr", f"127.0.0.1:{resp_ports[i]}",
                    "--data-dir", f"{work}/memdi{i + 1}", "--snapshot-every", "0",
                    "--fsync", "no"]
            procs.append(subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                          stderr=open(f"{work}/memdi{i + 1}.log", "w")))
        for port in redis_ports + resp_ports:
            wait_ready(port)
        # The replica attached, and a memdi leader elected.
        deadline = time.monotonic() + 30
        while ask(redis_ports[0], "WAIT", 1, 1000) < 1:
            if time.monotonic() > deadline:
                raise SystemExit("compare-quorum: the Redis replica did not attach")
        leader = None
        while leader is None:
            if time.monotonic() > deadline:
                raise SystemExit("compare-quorum: no memdi leader")
            for port in resp_ports:
                role = ask(port, "ROLE")
                if isinstance(role, list) and role and role[0] == b"master":
                    leader = port
            time.sleep(0.1)
        version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True)
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip() or "?"
        print(f"{CLIENTS} clients, SET (64-byte value) + WAIT 1 0 per write, {SECONDS:g} s per run, "
              f"{ROUNDS} rounds alternating; {' '.join(version.stdout.split()[:3])}; "
              f"memdi-server at {commit}; {os.cpu_count()} cores")
        runs = {"redis": [], "memdi": []}
        for round_ in range(1, ROUNDS + 1):
            for name, port in (("redis", redis_ports[0]), ("memdi", leader)):
                rate, p50, p99, errors = run(port, f"{name}{round_}-")
                runs[name].append((rate, p50, p99))
                print(f"  round {round_}  {name:<5} {rate:9.0f} writes/s  p50 {p50:6.3f} ms  "
                      f"p99 {p99:6.3f} ms  errors {errors}")
        med = {n: [statistics.median(r[i] for r in runs[n]) for i in range(3)] for n in runs}
        m, r = med["memdi"], med["redis"]
        print()
        print(f"{'':<8}{'writes/s':>10} {'p50 ms':>8} {'p99 ms':>8}")
        print(f"{'memdi':<8}{m[0]:>10.0f} {m[1]:>8.3f} {m[2]:>8.3f}")
        print(f"{'Redis':<8}{r[0]:>10.0f} {r[1]:>8.3f} {r[2]:>8.3f}")
        print(f"memdi/Redis throughput ratio: {m[0] / r[0]:.2f}")
    finally:
        for p in procs:
            p.kill()
            p.wait()
        subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    main()
