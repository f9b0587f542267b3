"""Drives a memdi node's RESP port with redis-py and checks every command's answer.

Usage: python3 redis_py_check.py PORT ROLE MAX_KEYS
ROLE is "master" or "slave" (what INFO must report); MAX_KEYS is the node's --max-keys, to
fill the store and check the OOM error. Exits non-zero with the failed check on any mismatch.
"""
import sys
import time
import warnings

import redis

# SETEX and PSETEX are deprecated in redis-py but still Redis commands memdi serves.
warnings.simplefilter("ignore", DeprecationWarning)

port, role, max_keys = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
# redis-py 8 speaks RESP3 by default; memdi speaks RESP2 only (HELLO 3 is refused).
r = redis.Redis(host="127.0.0.1", port=port, socket_timeout=10, protocol=2)


def expect_error(text, call, *args):
    try:
        call(*args)
    # redis-py raises subclasses by the error's text (AuthenticationError for AUTH).
    except redis.exceptions.RedisError as error:
        message = str(error.args[0] if error.args else error)
        assert text in message, f"{args}: got {message!r}, want {text!r}"
        return
    raise AssertionError(f"{args}: no error, want {text!r}")


assert r.flushdb() is True
assert r.ping() is True
assert r.echo("hi") == b"hi"
assert r.execute_command("SELECT", 0) in (b"OK", True, "OK")

# SET and its options
assert r.set("k", "v") is True
assert r.get("k") == b"v"
assert r.set("k", "w", nx=True) is None
assert r.set("absent", "w", xx=True) is None
assert r.set("k", "w", xx=True) is True
assert r.set("k", "x", get=True) == b"w"
assert r.set("fresh", "1", get=True) is None
assert r.set("k", "y", ex=100) is True
assert 98 <= r.ttl("k") <= 100
assert r.set("k", "z", keepttl=True) is True
assert 98 <= r.ttl("k") <= 100
assert r.set("k", "p", px=50_000) is True
assert 48_000 <= r.pttl("k") <= 50_000
assert r.set("k", "q", exat=int(time.time()) + 200) is True
assert 190 <= r.ttl("k") <= 200
assert r.set("k", "q", pxat=int(time.time() * 1000) + 300_000) is True
assert 290 <= r.ttl("k") <= 300
expect_error("invalid expire time in 'set' command", r.execute_command, "SET", "k", "v", "EX", "0")
expect_error("syntax error", r.execute_command, "SET", "k", "v", "NX", "XX")
expect_error("value is not an integer or out of range", r.execute_command, "SET", "k", "v", "EX", "x")

# GETDEL, GETSET, SETNX, SETEX, PSETEX
assert r.getdel("k") == b"q"
assert r.getdel("k") is None
assert r.getset("gs", "1") is None
assert r.getset("gs", "2") == b"1"
assert r.setnx("nx", "1") is True
assert r.setnx("nx", "2") is False
assert r.setex("ex", 10, "v") is True
assert 9 <= r.ttl("ex") <= 10
assert r.psetex("pex", 10_000, "v") is True
assert 9_000 <= r.pttl("pex") <= 10_000
expect_error("invalid expire time in 'setex' command", r.setex, "ex", -1, "v")

# MSET, MGET, DEL, UNLINK, EXISTS
assert r.mset({"m1": "a", "m2": "b", "m3": "c"}) is True
assert r.mget("m1", "m2", "nope", "m3") == [b"a", b"b", None, b"c"]
assert r.exists("m1", "m2", "nope", "m1") == 3
assert r.delete("m1", "nope") == 1
assert r.unlink("m2", "m3") == 2
assert r.exists("m1", "m2", "m3") == 0
# More keys than one command keeps in flight (64): answered whole.
many = [f"d{i}" for i in range(150)]
assert r.mset({key: 1 for key in many}) is True
assert r.exists(*many, "nope") == 150
assert r.delete(*many, "nope") == 150
assert r.exists(*many) == 0
expect_error("wrong number of arguments for 'mset' command", r.execute_command, "MSET", "a", "1", "b")

# Counters
assert r.incr("n") == 1
assert r.incrby("n", 10) == 11
assert r.decr("n") == 10
assert r.decrby("n", 4) == 6
assert r.get("n") == b"6"
r.set("s", "text")
expect_error("value is not an integer or out of range", r.incr, "s")
expect_error("value is not an integer or out of range", r.execute_command, "INCRBY", "n", "1.5")
r.set("big", str(2**63 - 1))
expect_error("increment or decrement would overflow", r.incr, "big")

# APPEND, STRLEN, TYPE
assert r.append("s", "++") == 6
assert r.get("s") == b"text++"
assert r.strlen("s") == 6
assert r.strlen("nope") == 0
assert r.type("s") == b"string"
assert r.type("nope") == b"none"

# TTLs
assert r.ttl("s") == -1
assert r.ttl("nope") == -2
assert r.expire("s", 100) is True
assert 99 <= r.ttl("s") <= 100
assert r.pexpire("s", 100_000) is True
assert r.persist("s") is True
assert r.persist("s") is False
assert r.ttl("s") == -1
assert r.expire("nope", 10) is False
r.set("short", "v", px=150)
time.sleep(0.4)
assert r.get("short") is None
assert r.expire("s", -1) is True
assert r.exists("s") == 0

# KEYS, SCAN, DBSIZE, RANDOMKEY, FLUSHDB
r.flushdb()
assert r.randomkey() is None
for i in range(30):
    r.set(f"user:{i}", i)
r.set("other", 1)
assert r.dbsize() == 31
assert sorted(r.keys("user:*")) == sorted(f"user:{i}".encode() for i in range(30))
assert r.keys("user:1?") == [] or all(k.startswith(b"user:1") for k in r.keys("user:1?"))
assert sorted(r.keys("user:1?")) == sorted(f"user:{i}".encode() for i in range(10, 20))
scanned = set(r.scan_iter(match="user:*", count=7))
assert scanned == {f"user:{i}".encode() for i in range(30)}, scanned
assert set(r.scan_iter(count=5)) == set(r.keys("*"))
assert r.randomkey() in set(r.keys("*"))
assert r.flushall() is True
assert r.dbsize() == 0

# Pipelined commands are answered in order.
pipe = r.pipeline(transaction=False)
for i in range(150):
    pipe.set(f"p{i}", i)
    pipe.incr(f"p{i}")
    pipe.get(f"p{i}")
results = pipe.execute()
for i in range(150):
    assert results[3 * i : 3 * i + 3] == [True, i + 1, str(i + 1).encode()], (i, results[3 * i : 3 * i + 3])
r.flushdb()

# Connection and server commands
assert r.client_setname("checker") is True
assert r.client_getname() in (b"checker", "checker")
assert isinstance(r.client_id(), int)
assert r.client_info()["name"] == "checker"
expect_error("Client names cannot contain spaces", r.client_setname, "a b")
assert r.config_get("maxmemory")["maxmemory"].isdigit()
assert "save" in r.config_get("*")
expect_error("AUTH <password> called without any password configured", r.execute_command, "AUTH", "x")
hello = r.execute_command("HELLO", 2)
assert b"proto" in hello and b"redis" in hello, hello
expect_error("unsupported protocol version", r.execute_command, "HELLO", 3)
expect_error("unknown command 'NOSUCH', with args beginning with: 'a' ", r.execute_command, "NOSUCH", "a")
expect_error("wrong number of arguments for 'get' command", r.execute_command, "GET")
expect_error("DB index is out of range", r.execute_command, "SELECT", 1)
expect_error("unknown subcommand 'NOPE'. Try CONFIG HELP.", r.execute_command, "CONFIG", "NOPE")
info = r.info()
assert info["role"] == role, info
assert info["redis_version"].startswith("7"), info
for section in ("server", "clients", "memory", "persistence", "stats", "replication", "keyspace"):
    r.info(section)
replication = r.info("replication")
if role == "slave":
    assert replication["master_host"] == "127.0.0.1", replication
    assert int(replication["master_port"]) > 0, replication
assert r.execute_command("ROLE")[0] == role.encode()
assert r.command_count() > 40
get_info = r.execute_command("COMMAND", "INFO", "get")["get"]
assert (get_info["arity"], get_info["first_key_pos"]) == (2, 1), get_info
assert r.wait(0, 1000) >= 0
before = r.lastsave()
assert r.save() is True
assert r.lastsave() >= before
assert r.bgsave() is True

# A full store answers OOM, and nothing of the refused MSET is kept.
filler = {f"fill:{i}": "x" for i in range(max_keys + 1)}
try:
    r.mset(filler)
except redis.exceptions.ResponseError as error:
    assert str(error).startswith("command not allowed when used memory > 'maxmemory'"), error
else:
    raise AssertionError("an MSET of more keys than the store holds succeeded")
assert r.dbsize() == 0
for i in range(max_keys):
    r.set(f"fill:{i}", "x")
try:
    r.set("one-too-many", "x")
except redis.exceptions.ResponseError as error:
    assert str(error).startswith("command not allowed when used memory > 'maxmemory'"), error
else:
    raise AssertionError("a write to a full store succeeded")
r.flushdb()
print("redis-py: all checks passed")
