#!/usr/bin/env python3
"""Two OpenSIPS nodes with the same secret, with and without a shared store (issue 13).

    OPENSIPS=.../sbin/opensips SSO_AUTH_MODULE=.../libsso_auth.so python3 tests/e2e/cluster.py
    python3 tests/e2e/cluster.py -k outage        # only cases whose name contains "outage"

Shared mode is `cachedb_url` = a Redis of our own (Debian's `redis-server`, started on a free
loopback port with no persistence, stopped, paused and restarted by the cases) through
OpenSIPS's `cachedb_redis` with short `connect_timeout` / `query_timeout`. Reuses run.py's
harness (OpenSIPS instances, the test SSO, the SIP client). The last line printed is always
`cluster: N passed, N failed, N skipped`; exit status 1 when anything failed. Without
redis-server or cachedb_redis.so the shared-mode cases are skipped, loudly.
"""

import argparse
import hashlib
import hmac
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run  # noqa: E402
from run import (CRASH_PATTERNS, Ctx, Fail, REPO, Skip, SsoServer, challenge_for,  # noqa: E402
                 check, client, code_of, digest_request, digest_value, eq, expect,
                 find_modules_dir, find_opensips, note, options_ping, stop_process_group)
from sip import SipError  # noqa: E402

URI = "sip:" + run.DOMAIN
# cachedb_redis's own bounds (ms): every Redis call of a worker gives up after these.
REDIS_CONNECT_TIMEOUT = 100
REDIS_QUERY_TIMEOUT = 100
# sso_auth's bound: a call slower than this marks the store down for the node.
CACHEDB_TIMEOUT = 250
# health.rs RETRY_SECS: a store that is down is probed this often.
RETRY_SECS = 2


def auth(value):
    return [("Authorization", value)]


# --------------------------------------------------------------------------------------
# Redis of our own
# --------------------------------------------------------------------------------------

def free_tcp_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Redis:
    def __init__(self, binary, workdir):
        self.binary = binary
        self.port = free_tcp_port()
        self.workdir = Path(workdir)
        self.proc = None
        self.logf = None

    @property
    def url(self):
        return "redis://127.0.0.1:%d/" % self.port

    def start(self):
        self.logf = open(self.workdir / "redis.log", "ab")
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir)],
            stdin=subprocess.DEVNULL, stdout=self.logf, stderr=subprocess.STDOUT,
            start_new_session=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if self.cmd("PING") == "PONG":
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        raise Fail("redis-server did not answer PING on port %d" % self.port)

    def stop(self):
        if self.proc is not None:
            stop_process_group(self.proc, term_wait=5)
            self.proc = None
        if self.logf:
            self.logf.close()
            self.logf = None

    def pause(self):
        os.killpg(self.proc.pid, signal.SIGSTOP)

    def resume(self):
        os.killpg(self.proc.pid, signal.SIGCONT)

    def cmd(self, *args):
        """One command over RESP; returns a str, int, None or list of those."""
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            s.sendall(out)
            f = s.makefile("rb")
            return self._read(f)

    def _read(self, f):
        line = f.readline().rstrip(b"\r\n")
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise Fail("redis error: %s" % rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = f.read(n + 2)[:-2]
            return data.decode("utf-8", "replace")
        if kind == b"*":
            return [self._read(f) for _ in range(int(rest))]
        raise Fail("unexpected redis reply %r" % line)


# --------------------------------------------------------------------------------------
# What the module writes (src/core/cluster/entry.rs), computed here to plant entries
# --------------------------------------------------------------------------------------

def _subkey(secret, label):
    return hmac.new(secret, label, hashlib.sha256).digest()


def token_key(secret, token):
    names = _subkey(secret, b"sso_auth cluster key names v1")
    tag = hmac.new(names, b"t\0" + hashlib.sha256(token.encode()).digest(),
                   hashlib.sha256).digest()
    return "sso_auth:t:" + tag[:16].hex()


def positive_entry(mac_secret, key, user, until, exp):
    """A positive entry as the module encodes it, MAC'd with `mac_secret`'s entry key."""
    import base64
    import struct
    body = bytes([1, 1]) + struct.pack(">Q", until) + bytes([1]) + struct.pack(">q", exp)
    for field in (user.encode(), b"sip", b'{"username":"%s"}' % user.encode()):
        body += struct.pack(">H", len(field)) + field
    mac_key = _subkey(mac_secret, b"sso_auth cluster entries v1")
    mac = hmac.new(mac_key, struct.pack(">I", len(key)) + key.encode() + body,
                   hashlib.sha256).digest()
    return base64.b64encode(body + mac).decode().rstrip("=")


# --------------------------------------------------------------------------------------
# Nodes
# --------------------------------------------------------------------------------------

class Env:
    def __init__(self, ctx, redis, node_id):
        self.ctx = ctx
        self.redis = redis
        self.node_id = node_id       # the module knows node_id (issue 13 item 1)

    def node(self, name):
        """Nodes a/b share the store; pa/pb have none. All share the secret."""
        ctx = self.ctx
        if name in ctx.instances:
            return ctx.instance(name)
        shared = name in ("a", "b")
        if shared and self.redis is None:
            raise Skip("no shared store (see the skip reason at the top)")
        params, modules = "", ""
        if self.node_id:
            params += 'modparam("sso_auth", "node_id", "%s")\n' % name
        if shared:
            modules = 'loadmodule "cachedb_redis.so"'
            params += ('modparam("cachedb_redis", "connect_timeout", %d)\n'
                       'modparam("cachedb_redis", "query_timeout", %d)\n'
                       'modparam("sso_auth", "cachedb_url", "%s")\n'
                       'modparam("sso_auth", "cachedb_timeout", %d)\n'
                       % (REDIS_CONNECT_TIMEOUT, REDIS_QUERY_TIMEOUT, self.redis.url,
                          CACHEDB_TIMEOUT))
        return ctx.instance(name, udp_workers=2, modules=modules, params=params)


def login(env, node, user="alice"):
    """Challenge + Digest login on `node`; returns (challenge, credentials value)."""
    with client(env.ctx, user, node) as c:
        _r, ds = challenge_for(c)
        ch = ds[0]
        value = digest_value(ch, URI, user=user, password=user + "pw", nc=1, cnonce="c0ffee01")
        _q, r = c.request("REGISTER", headers=auth(value))
    expect(r, 200, 2, "Digest login of %s on node %s" % (user, node))
    return ch, value


def send(env, node, headers, timeout=5.0, user="alice"):
    t0 = time.monotonic()
    with client(env.ctx, user, node) as c:
        _q, r = c.request("REGISTER", headers=headers, timeout=timeout)
    return r, (time.monotonic() - t0) * 1000


def stats(env, node):
    return env.ctx.instance(node).sso_stats()


# --------------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------------

CASES = []


def case(name):
    def deco(fn):
        CASES.append((name, fn))
        return fn
    return deco


@case("no_store_replay_on_other_node_refused")
def t_plain_replay(env):
    if not env.node_id:
        raise Skip("needs node_id (issue 13 item 1: nonces naming their node), "
                   "not in this build of sso_auth")
    env.node("pa"), env.node("pb")
    tok0 = env.ctx.sso.count("token")
    _ch, value = login(env, "pa")
    r, _ms = send(env, "pb", auth(value))
    expect(r, 401, -3, "the same credentials on the other node (no store)")
    ds = r.digest_challenges()
    check(ds and ds[0].get("stale") == "true", "the new challenge does not say stale=true")
    # the phone re-signs with the other node's nonce without asking its user
    with client(env.ctx, "alice", "pb") as c:
        _q, r2 = c.request("REGISTER", headers=auth(digest_value(ds[0], URI, nc=1)))
    expect(r2, 200, 2, "login with the other node's fresh nonce")
    eq(env.ctx.sso.count("token") - tok0, 2, "/token calls (the replay never reached the SSO)")


@case("shared_replay_on_other_node_refused_next_nc_accepted")
def t_shared_replay(env):
    env.node("a"), env.node("b")
    sso = env.ctx.sso
    tok0 = sso.count("token")
    b0 = stats(env, "b")
    ch, value = login(env, "a")
    r, _ms = send(env, "b", auth(value))
    expect(r, 401, -8, "the same (nonce, nc) on the other node")
    r, _ms = send(env, "a", auth(value))
    expect(r, 401, -8, "the same (nonce, nc) on the first node")
    v2 = digest_value(ch, URI, nc=2, cnonce="c0ffee01")
    r, _ms = send(env, "b", auth(v2))
    expect(r, 200, 2, "nc=2 of node a's nonce on node b")
    r, _ms = send(env, "a", auth(v2))
    expect(r, 401, -8, "nc=2 again, back on node a")
    eq(sso.count("token") - tok0, 2, "/token calls (only the two first uses)")
    d = run.deltas(b0, stats(env, "b"))
    note("node b: cross_node_replays_blocked +%d, replays_blocked +%d, cachedb_errors +%d",
         d["cross_node_replays_blocked"], d["replays_blocked"], d["cachedb_errors"])
    eq(d["cross_node_replays_blocked"], 1, "node b's cross_node_replays_blocked growth")
    eq(d["cachedb_errors"], 0, "node b's cachedb_errors growth")


@case("shared_token_introspected_once_for_both_nodes")
def t_shared_token(env):
    env.node("a"), env.node("b")
    sso = env.ctx.sso
    tok = sso.issue_token("alice")
    n0 = sso.count("introspect")
    b0 = stats(env, "b")
    r, _ms = send(env, "a", [("X-SSO-Token", tok)])
    expect(r, 200, 1, "token on node a")
    r, _ms = send(env, "b", [("X-SSO-Token", tok)])
    expect(r, 200, 1, "the same token on node b")
    r, _ms = send(env, "b", [("Authorization", "Bearer " + tok)])
    expect(r, 200, 1, "the same token as Bearer on node b (local cache now)")
    eq(sso.count("introspect") - n0, 1, "introspections for two nodes")
    d = run.deltas(b0, stats(env, "b"))
    eq(d["cachedb_hits"], 1, "node b's cachedb_hits growth")
    eq(d["cache_hits"], 1, "node b's cache_hits growth (its local copy)")
    # another user's token from the store still has to match the AOR
    r, _ms = send(env, "b", [("X-SSO-Token", tok)], user="bob")
    expect(r, 401, -7, "alice's token for bob on node b")


@case("shared_forged_entry_refused")
def t_forged(env):
    env.node("a"), env.node("b")
    sso, redis = env.ctx.sso, env.redis
    secret = env.ctx.nonce_secret.encode()
    now = int(time.time())
    # 1. A token the SSO never issued, with an entry for it made without the secret.
    fake = "forged-" + os.urandom(8).hex()
    key = token_key(secret, fake)
    stranger = os.urandom(32)
    redis.cmd("SET", key, positive_entry(stranger, key, "alice", now + 300, now + 3600))
    # 2. A genuine entry (alice's real token) copied under another unknown token's key.
    real = sso.issue_token("alice")
    r, _ms = send(env, "a", [("X-SSO-Token", real)])
    expect(r, 200, 1, "alice's real token on node a")
    genuine = redis.cmd("GET", token_key(secret, real))
    check(genuine, "node a wrote no entry for the real token")
    moved = "moved-" + os.urandom(8).hex()
    redis.cmd("SET", token_key(secret, moved), genuine)
    # 3. Plain JSON, as somebody guessing at the format would write it.
    plain = "plain-" + os.urandom(8).hex()
    redis.cmd("SET", token_key(secret, plain), '{"active":true,"username":"alice"}')
    b0 = stats(env, "b")
    n0 = sso.count("introspect")
    for label, tok in (("made without the secret", fake), ("moved from another token", moved),
                       ("plain JSON", plain)):
        r, _ms = send(env, "b", [("X-SSO-Token", tok)])
        expect(r, 401, -6, "token whose store entry is %s" % label)
    d = run.deltas(b0, stats(env, "b"))
    eq(d["cachedb_bad_entries"], 3, "node b's cachedb_bad_entries growth")
    eq(d["cachedb_hits"], 0, "node b's cachedb_hits growth")
    eq(sso.count("introspect") - n0, 3, "introspections (the SSO decided each time)")
    log = env.ctx.instance("b").log_text()
    n = log.count("fails its MAC check")
    check(1 <= n <= 2, "%d warnings about bad entries (at most one a minute per worker)" % n)


def _outage_lines(env, node):
    return env.ctx.instance(node).log_text().count("shared store unreachable")


@case("shared_redis_stopped_and_restarted")
def t_outage(env):
    env.node("a"), env.node("b")
    sso, redis = env.ctx.sso, env.redis
    cached = sso.issue_token("alice")
    r, _ms = send(env, "a", [("X-SSO-Token", cached)])
    expect(r, 200, 1, "token before the outage")
    ch, used = login(env, "a")
    a0, b0 = stats(env, "a"), stats(env, "b")
    down0 = _outage_lines(env, "a") + _outage_lines(env, "b")
    redis.stop()
    slow = []
    try:
        for i in range(3):
            # A pair used before the outage, replayed on the other node: the store cannot
            # vouch for it, so never accepted.
            r, ms = send(env, "b", auth(used))
            slow.append(ms)
            check(r.status == 401 and code_of(r) in (-3, -8),
                  "replay on node b during the outage: %d %s, X-Auth-Code %s"
                  % (r.status, r.reason, r.get("X-Auth-Code")))
            r, ms = send(env, "a", auth(used))
            slow.append(ms)
            expect(r, 401, -8, "replay on node a during the outage (its own table)")
            v = digest_value(ch, URI, nc=3 + i, cnonce="c0ffee01")
            r, ms = send(env, "b", auth(v))
            slow.append(ms)
            expect(r, 401, -3, "a new nc of node a's nonce on node b during the outage")
            # Tokens keep working: the cached one, and a new one through introspection.
            for node in ("a", "b"):
                r, ms = send(env, node, [("X-SSO-Token", cached)])
                slow.append(ms)
                expect(r, 200, 1, "cached token on node %s during the outage" % node)
                r, ms = send(env, node, [("X-SSO-Token", sso.issue_token("alice"))])
                slow.append(ms)
                expect(r, 200, 1, "new token on node %s during the outage" % node)
            # A login on the node that issued the nonce: only with node_id can it tell.
            with client(env.ctx, "alice", "a") as c:
                _r, ds = challenge_for(c)
                _q, r = c.request("REGISTER", headers=auth(digest_value(ds[0], URI, nc=1)))
            if env.node_id:
                expect(r, 200, 2, "login with node a's own nonce during the outage")
            else:
                expect(r, 401, -3, "login during the outage without node_id (fails closed)")
            time.sleep(0.4)
        note("answers during the outage: slowest %.0f ms over %d requests", max(slow), len(slow))
        check(max(slow) < 1000, "a request waited %.0f ms for a stopped store" % max(slow))
        eq(_outage_lines(env, "a") + _outage_lines(env, "b") - down0, 2,
           "'shared store unreachable' lines (one per node and outage)")
    finally:
        redis.start()
    time.sleep(RETRY_SECS + 0.2)
    ch2, v1 = login(env, "a")
    r, _ms = send(env, "b", auth(v1))
    expect(r, 401, -8, "replay on node b after the store came back")
    r, _ms = send(env, "b", auth(digest_value(ch2, URI, nc=2, cnonce="c0ffee01")))
    expect(r, 200, 2, "next nc on node b after the store came back")
    tok = sso.issue_token("alice")
    n0 = sso.count("introspect")
    send(env, "a", [("X-SSO-Token", tok)])
    r, _ms = send(env, "b", [("X-SSO-Token", tok)])
    expect(r, 200, 1, "token on node b after the store came back")
    eq(sso.count("introspect") - n0, 1, "introspections after recovery (the store serves b)")
    for node, s0 in (("a", a0), ("b", b0)):
        d = run.deltas(s0, stats(env, node))
        check(d["cachedb_errors"] >= 1, "node %s counted no cachedb_errors" % node)
        back = env.ctx.instance(node).log_text().count("shared store answers again")
        check(back >= 1, "node %s never logged that the store answers again" % node)
        note("node %s: cachedb_errors +%d", node, d["cachedb_errors"])


@case("shared_redis_hung_bounded_wait")
def t_hung(env):
    env.node("a"), env.node("b")
    sso, redis = env.ctx.sso, env.redis
    # Make sure both nodes see the store up (after the previous case's outage).
    time.sleep(RETRY_SECS + 0.2)
    login(env, "b")
    ch, used = login(env, "a")
    redis.pause()
    times = []
    try:
        for _ in range(6):
            r, ms = send(env, "b", auth(used))
            times.append(ms)
            check(r.status == 401 and code_of(r) in (-3, -8), "replay on b with Redis hung: "
                  "%d X-Auth-Code %s" % (r.status, r.get("X-Auth-Code")))
            r, ms = send(env, "b", [("X-SSO-Token", sso.issue_token("alice"))])
            times.append(ms)
            expect(r, 200, 1, "new token on node b with Redis hung")
    finally:
        redis.resume()
    note("answers with Redis hung (ms): %s", ", ".join("%.0f" % t for t in times))
    # cachedb_redis gives up after its query_timeout (twice, with a reconnect); then the
    # node stops asking: only the first request waits.
    first_bound = 2 * (REDIS_QUERY_TIMEOUT + REDIS_CONNECT_TIMEOUT) + 300
    check(times[0] < first_bound, "first request waited %.0f ms (bound %d ms)"
          % (times[0], first_bound))
    check(max(times[1:]) < 150, "later requests still waited for the hung store: %s" % times)
    log = env.ctx.instance("b").log_text()
    check("shared store slower than cachedb_timeout" in log
          or "shared store unreachable" in log, "node b did not log the outage")


@case("config_cachedb_url_needs_its_engine")
def t_config(env):
    ctx = env.ctx
    # An empty cachedb_url is unset: no cachedb module needed.
    inst = ctx.instance("empty_url", udp_workers=1,
                        params='modparam("sso_auth", "cachedb_url", "")\n')
    check(options_ping(inst.port, 2.0), "node with cachedb_url \"\" does not answer")
    ctx.retire("empty_url")
    # A URL whose engine is not loaded stops start-up, naming the parameter or dependency;
    # the URL's password never reaches the log.
    try:
        ctx.instance("no_engine", udp_workers=1,
                     params='modparam("sso_auth", "cachedb_url", '
                            '"redis://:s3cr3t-pw@127.0.0.1:1/")\n')
    except Fail as e:
        log = ctx.instances["no_engine"].log_text()
        check("cachedb" in log, "start-up failure without a cachedb line: %s" % e)
        check("s3cr3t-pw" not in log, "the store password is in the log")
        ctx.retire("no_engine")
        return
    raise Fail("OpenSIPS started with cachedb_url set and no cachedb engine loaded")


@case("zz_nodes_alive_no_crash")
def t_alive(env):
    for inst in list(env.ctx.instances.values()):
        check(inst.running(), "OpenSIPS '%s' exited" % inst.name)
        check(options_ping(inst.port, 2.0), "OpenSIPS '%s' no longer answers" % inst.name)
        text = inst.log_text()
        for pat in CRASH_PATTERNS:
            import re
            m = re.search(pat, text, re.I)
            check(not m, "OpenSIPS '%s' log matches /%s/" % (inst.name, pat))


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------

def summary(p, f, s):
    print("cluster: %d passed, %d failed, %d skipped" % (p, f, s), flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-k", dest="filter", action="append", default=[])
    args = ap.parse_args(argv)
    cases = [c for c in CASES if not args.filter or any(k in c[0] for k in args.filter)]
    binary = find_opensips()
    if binary is None:
        print("CLUSTER SKIPPED: no OpenSIPS found (set OPENSIPS=/path/to/sbin/opensips)")
        summary(0, 0, len(cases))
        return 0
    module = os.environ.get("SSO_AUTH_MODULE") or str(REPO / "target/release/libsso_auth.so")
    mdir = find_modules_dir(binary)
    if not os.path.isfile(module) or not mdir:
        print("CLUSTER ERROR: module %s or stock modules dir %s missing" % (module, mdir))
        summary(0, len(cases), 0)
        return 1
    redis_bin = shutil.which("redis-server")
    missing = []
    if not redis_bin:
        missing.append("redis-server not installed (Debian: apt-get install redis-server)")
    if not (Path(mdir) / "cachedb_redis.so").exists():
        missing.append("cachedb_redis.so not in %s (build OpenSIPS with libhiredis-dev)" % mdir)
    node_id = b"node_id" in Path(module).read_bytes()
    print("OpenSIPS: %s\nsso_auth: %s (node_id %s)" % (binary, module,
                                                     "known" if node_id else "unknown"))
    t_start = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="sso-cluster-"))
    ctx = Ctx(binary, mdir, module, work, int(os.environ.get("E2E_LOG_LEVEL", "3")))
    ctx.prepare_mpath()
    ctx.sso = SsoServer().start()
    redis = None
    if missing:
        print("=" * 72)
        for m in missing:
            print("SHARED-MODE CASES SKIPPED: " + m)
        print("=" * 72)
    else:
        redis = Redis(redis_bin, work).start()
        print("redis:    %s" % redis.url)
    env = Env(ctx, redis, node_id)
    passed = failed = skipped = 0
    try:
        for name, fn in cases:
            t0 = time.monotonic()
            sizes = {n: i.log_size() for n, i in ctx.instances.items()}
            try:
                fn(env)
                passed += 1
                print("PASS %s (%.0f ms)" % (name, (time.monotonic() - t0) * 1000), flush=True)
            except Skip as e:
                skipped += 1
                print("SKIP %s: %s" % (name, e), flush=True)
            except (Fail, SipError) as e:
                failed += 1
                print("FAIL %s: %s" % (name, e), flush=True)
                for n, inst in ctx.instances.items():
                    tail = inst.log_tail(15, sizes.get(n, 0))
                    if tail.strip():
                        print("    ---- OpenSIPS '%s' log during this case ----" % n)
                        print("\n".join("    | " + ln for ln in tail.splitlines()))
            except Exception as e:  # noqa: BLE001
                failed += 1
                print("FAIL %s: harness error %s: %s" % (name, type(e).__name__, e), flush=True)
                traceback.print_exc()
            finally:
                if redis is not None and redis.proc is None:
                    redis.start()
    finally:
        ctx.stop_all()
        ctx.sso.stop()
        if redis is not None:
            redis.stop()
    return run.finish_suite(work, "configs, OpenSIPS and Redis logs", t_start, summary, passed,
                            failed, skipped)


if __name__ == "__main__":
    sys.exit(main())
