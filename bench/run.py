#!/usr/bin/env python3
"""Benchmark of the sso_auth OpenSIPS module: real OpenSIPS, sipp on loopback, a lean SSO.

    python3 bench/run.py                 # full run (about 12-15 minutes on 2 cores)
    BENCH_QUICK=1 python3 bench/run.py   # smoke run (about 2 minutes)

Scenarios (every one a REGISTER answered by registrar's save("location"), usrloc in memory):

    a  baseline          no authentication at all
    b  token, cached     X-SSO-Token: <one valid token of alice> on every REGISTER
    c  token, per call   X-SSO-Token: bench-alice-<run>-<n>: one introspection per REGISTER
    d  sso_auth Digest   REGISTER -> 401 -> REGISTER+Digest -> SSO /token -> 200 + token
    e  auth_db Digest    the same exchange with OpenSIPS auth + auth_db over db_text
    f  d + cachedb_url   scenario d with the shared store on (a Redis of the run's own,
                         cachedb_redis): every login also claims its (nonce, nc) there

Async SSO calls (issue 11), same REGISTER flows through `async(sso_authorize(""), resume)`
(suffix "a") or the sync call, with the SSO answering after a delay that does not
serialize it (fast_sso.py --delay-ms / GET /control):

    ca, da             c and d, async form, SSO at 0 ms (against c and d: the async cost)
    c20, c20a          c, SSO answering after 20 ms, sync / async form
    d20, d20a          d, SSO answering after 20 ms, sync / async form
    c20a8, c20a32, c20a64   c20a with modparam sso_max_connections 8 / 32 / 64 (reported
                       "skipped: modparam missing" while the module does not know it)
    oh, oha            no rate search: SSO hanging, sipp sends 1000 new-token REGISTERs/s
                       for one step, and OPTIONS (100/s, answered by the script before any
                       authentication) are timed: their p99 is how long a worker stays busy
    BENCH_SCENARIOS=async runs a,b,c,d and all of the above, and prints the table of
    BENCHMARKS.md "Async SSO calls (issue 11)" at the end.

For each scenario the call rate is stepped up (doubling, then bisection) and the highest
rate that passes is reported. A step passes when
  * fewer than 0.1 % of its calls fail (a call fails when it does not end with its 200 OK:
    unexpected answer, or nothing within sipp's 4 s receive timeout),
  * sipp placed the calls at >= 95 % of the asked rate,
  * p99 of the latency probe (probe.py, 50 exchanges/s beside sipp, microsecond clock)
    is under 100 ms, and p99 of sipp's own response times (coarse 4 ms clock, includes
    sipp's own queueing) under 500 ms, SIP's retransmission timer T1.
Response times are reported from the probe; sipp's are in the per-step table.
CPU time of OpenSIPS (all its processes), the SSO, sipp and the runner+probe is measured
per step, so that a reader can see which process ran out of CPU.

Environment:
    OPENSIPS          sbin/opensips to use (else `opensips` on PATH)
    SSO_AUTH_MODULE   the module (else target/sso_auth.so, else target/release/libsso_auth.so)
    BENCH_QUICK       1 = short steps, fewer refinements
    BENCH_SCENARIOS   subset, e.g. "a,e" (f needs redis-server and cachedb_redis.so; without
                      them it is left out with a note)
    BENCH_STEP_SECONDS  length of one step (default 12, quick 2)
    BENCH_UDP_WORKERS OpenSIPS udp_workers (default 4)
    BENCH_KEEP        1 = keep the work directory (configs, logs, sipp traces)
    BENCH_AB_ROUNDS   N = then a and b alternately N times at BENCH_AB_RATE cps (default
                      8000): OpenSIPS CPU per REGISTER of each, a/b per round and median

Writes bench/results-<opensips version>.md and prints the same text.
Python 3.11 standard library + sipp.
"""

import base64
import csv
import json
import os
import platform
import re
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from probe import Probe  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SCEN_DIR = HERE / "scenarios"

QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")
STEP_SECONDS = float(os.environ.get("BENCH_STEP_SECONDS") or (2 if QUICK else 12))
FIRST_RATE = 1000 if QUICK else 200
# BENCH_AB_ROUNDS=N: after the scenarios, a and b alternately N times at BENCH_AB_RATE cps
# (OpenSIPS CPU per REGISTER of each, and a/b per round).
AB_ROUNDS = int(os.environ.get("BENCH_AB_ROUNDS") or 0)
AB_RATE = int(os.environ.get("BENCH_AB_RATE") or 8000)
MAX_RATE = 51200
REFINES = 1 if QUICK else 3
COMMON_RATE = 2000 if QUICK else 3200   # every scenario passes there: CPU cost compared at it
FAIL_RATIO_MAX = 0.001          # < 0.1 % failed calls
ACHIEVED_MIN = 0.95             # sipp must place >= 95 % of the asked rate
PROBE_P99_MAX_MS = 100.0        # server latency seen by the probe
SIPP_P99_MAX_MS = 500.0         # sipp's own view: under SIP's retransmission timer T1
RECV_TIMEOUT_MS = 4000          # a call without its answer after this long fails
UDP_WORKERS = int(os.environ.get("BENCH_UDP_WORKERS") or 4)
PROBE_RATE = 50.0               # latency probe exchanges per second, beside sipp
DOMAIN = "example.com"
USER, PASSWORD = "alice", "alicepw"
CLIENT_ID, CLIENT_SECRET = "opensips", "opensips-secret"
CRASH_RE = re.compile(r"segfault|core dump|exited by a signal|panicked at|CRITICAL", re.I)

SCENARIOS = {
    "a": dict(title="a. baseline (no auth)", xml="a_baseline.xml", auth="none",
              probe="plain"),
    "b": dict(title="b. token, cache hit", xml="b_token_cached.xml", auth="sso",
              probe="token"),
    "c": dict(title="c. token, 1 introspection/REGISTER", xml="c_token_per_call.xml",
              auth="sso", probe="token_per_call"),
    "d": dict(title="d. sso_auth Digest (401 + SSO /token)", xml="d_sso_digest.xml",
              auth="sso", probe="digest_sso"),
    "e": dict(title="e. auth_db Digest (401 + db_text)", xml="e_native_digest.xml",
              auth="native", probe="digest_native"),
    "f": dict(title="f. sso_auth Digest + cachedb_url (Redis)", xml="d_sso_digest.xml",
              auth="sso", probe="digest_sso", cachedb=True),
}


def _variant(base, title, **kw):
    d = dict(SCENARIOS[base])
    d.update(title=title, **kw)
    return d


# issue 11: the async form against the sync one (see the docstring)
SCENARIOS.update({
    # a with the module loaded and configured but never called: b against am is the cost
    # of the sso_authorize call alone, with the same modules in memory (loading a module
    # moves OpenSIPS's own pkg allocations around, which alone changes fm_malloc's cost).
    "am": _variant("a", "am. a, sso_auth loaded, not called", load_sso=True),
    "ca": _variant("c", "ca. c, async form, SSO 0 ms", auth="sso_async"),
    "da": _variant("d", "da. d, async form, SSO 0 ms", auth="sso_async"),
    # c and d in the sync form inside a tm transaction (t_newtran, as examples/opensips.cfg
    # does): the async statement always runs in one, so ct/dt against ca/da is the cost of
    # the module's async path alone, and c/d against ct/dt the cost of the transaction.
    "ct": _variant("c", "ct. c, sync form in a tm transaction", auth="sso_tm"),
    "dt": _variant("d", "dt. d, sync form in a tm transaction", auth="sso_tm"),
    # SSO at 5 ms: every async request really suspends (at 0 ms a worker slowed down by
    # valgrind finds the answer already there and never hands tm an fd), so bench/profile.py
    # counts the reactor's share of the async form; the sync form's wait costs no instructions.
    "c5": _variant("c", "c5. c, SSO 5 ms, sync", delay_ms=5),
    "ct5": _variant("c", "ct5. c, SSO 5 ms, sync in a tm transaction", delay_ms=5,
                    auth="sso_tm"),
    "ca5": _variant("c", "ca5. c, SSO 5 ms, async", delay_ms=5, auth="sso_async"),
    "c20": _variant("c", "c20. c, SSO 20 ms, sync", delay_ms=20),
    "c20a": _variant("c", "c20a. c, SSO 20 ms, async", delay_ms=20, auth="sso_async"),
    "d20": _variant("d", "d20. d, SSO 20 ms, sync", delay_ms=20),
    "d20a": _variant("d", "d20a. d, SSO 20 ms, async", delay_ms=20, auth="sso_async"),
    "oh": _variant("c", "oh. OPTIONS, SSO hanging, 1000 new tokens/s, sync", hang=True,
                   options=True),
    "oha": _variant("c", "oha. OPTIONS, SSO hanging, 1000 new tokens/s, async", hang=True,
                    options=True, auth="sso_async"),
})
for _n in (8, 32, 64):
    SCENARIOS["c20a%d" % _n] = _variant(
        "c", "c20a%d. c20a, sso_max_connections %d" % (_n, _n), delay_ms=20,
        auth="sso_async", params='modparam("sso_auth", "sso_max_connections", %d)\n' % _n,
        needs_param="sso_max_connections")
GROUPS = {"async": "a,b,c,d,ct,dt,ca,da,c20,c20a,d20,d20a,c20a8,c20a32,c20a64,oh,oha"}
OPTIONS_LOAD_RATE = 1000        # new-token REGISTERs/s of the oh/oha step
OPTIONS_PROBE_RATE = 100.0      # OPTIONS/s timed beside it


def log(msg):
    print("[bench %s] %s" % (time.strftime("%H:%M:%S"), msg), flush=True)


# --------------------------------------------------------------------------------------
# discovery
# --------------------------------------------------------------------------------------

def find_opensips():
    env = os.environ.get("OPENSIPS")
    if env:
        if os.path.isfile(env) and os.access(env, os.X_OK):
            return env
        sys.exit("OPENSIPS=%s is not an executable file" % env)
    found = shutil.which("opensips")
    if not found:
        sys.exit("no OpenSIPS: set OPENSIPS=/path/to/sbin/opensips or put opensips on PATH")
    return found


def find_modules_dir(binary):
    prefix = Path(os.path.realpath(binary)).parent.parent
    cands = [prefix / "lib64/opensips/modules", prefix / "lib/opensips/modules"]
    cands += sorted(prefix.glob("lib/*-linux-gnu*/opensips/modules"))
    for c in cands:
        if (c / "sl.so").exists():
            return c
    sys.exit("cannot find the stock modules next to %s" % binary)


def find_module():
    env = os.environ.get("SSO_AUTH_MODULE")
    if env:
        return Path(env)
    for c in (REPO / "target/sso_auth.so", REPO / "target/release/libsso_auth.so"):
        if c.exists():
            return c
    return None


def uses_sso(key):
    return SCENARIOS[key]["auth"].startswith("sso") or SCENARIOS[key].get("load_sso", False)


def opensips_version(binary):
    out = run_capture([binary, "-V"])
    m = re.search(r"opensips (\S+)", out)
    return (m.group(1) if m else "unknown"), (out.splitlines() or [""])[0].strip()


def run_capture(cmd, timeout=20, cwd=None):
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=timeout, cwd=cwd, stdin=subprocess.DEVNULL)
        return p.stdout.decode("utf-8", "replace")
    except (OSError, subprocess.TimeoutExpired) as e:
        return "(%s)" % e


def machine_facts(binary, version_line, module):
    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = "%.1f GiB" % (int(line.split()[1]) / 1048576)
    except OSError:
        pass
    sipp_v = run_capture(["sipp", "-v"]).strip().splitlines()
    sipp_v = next((s.strip() for s in sipp_v if "SIPp" in s), "?")
    rev = run_capture(["git", "-C", str(REPO), "describe", "--always", "--dirty"]).strip()
    return [
        ("nproc", str(os.cpu_count())),
        ("CPU", cpu),
        ("memory", mem),
        ("kernel", platform.release()),
        ("OpenSIPS", "%s (%s)" % (version_line, binary)),
        ("sipp", sipp_v),
        ("Python", platform.python_version()),
        ("sso_auth", "%s, git %s" % (module or "(not found)", rev or "?")),
    ]


# --------------------------------------------------------------------------------------
# process handling
# --------------------------------------------------------------------------------------

CHILDREN = []      # Popen objects we started; all killed at exit


def kill_proc(p, grace=5.0):
    if p is None:
        return
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            p.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(p.pid, signal.SIGKILL)        # whatever is left of its process group
    except (ProcessLookupError, PermissionError):
        pass
    try:
        p.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def kill_all():
    while CHILDREN:
        kill_proc(CHILDREN.pop())


def spawn(cmd, **kw):
    p = subprocess.Popen(cmd, start_new_session=True, stdin=subprocess.DEVNULL, **kw)
    CHILDREN.append(p)
    return p


CLK_TCK = os.sysconf("SC_CLK_TCK")


def group_cpu_seconds(pgid):
    """user+system CPU seconds of every live process of process group pgid."""
    total = 0
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                s = f.read()
        except OSError:
            continue
        fields = s[s.rfind(")") + 2:].split()
        # fields[0] = state (field 3 of stat); pgrp = field 5, utime = 14, stime = 15
        try:
            if int(fields[2]) != pgid:
                continue
            total += int(fields[11]) + int(fields[12])
        except (IndexError, ValueError):
            continue
    return total / CLK_TCK


def machine_cpu():
    """(busy, steal, total) jiffies of the whole machine from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    steal = v[7] if len(v) > 7 else 0
    total = sum(v[:8])
    return total - idle - steal, steal, total


def udp_rcvbuf_errors():
    try:
        lines = [ln.split() for ln in open("/proc/net/snmp") if ln.startswith("Udp:")]
        return int(lines[1][lines[0].index("RcvbufErrors")])
    except (OSError, ValueError, IndexError):
        return 0


def free_udp_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# --------------------------------------------------------------------------------------
# the SSO
# --------------------------------------------------------------------------------------

class FastSso:
    def __init__(self, workdir, tokens):
        self.workdir = workdir
        self.tokens = tokens
        self.proc = None
        self.port = None

    def start(self):
        cmd = [sys.executable, str(HERE / "fast_sso.py"), "--port", "0",
               "--max-seconds", "3600"]
        for tok, user in self.tokens.items():
            cmd += ["--token", "%s:%s" % (tok, user)]
        self.cmd = cmd
        self.proc = spawn(cmd, stdout=subprocess.PIPE,
                          stderr=open(self.workdir / "fast_sso.err", "wb"))
        deadline = time.monotonic() + 10
        line = b""
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if line.startswith(b"LISTENING"):
                self.port = int(line.split()[1])
                return self
            if self.proc.poll() is not None:
                break
        raise RuntimeError("fast_sso did not start: %r" % line)

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def stats(self, reset=False):
        with urllib.request.urlopen(self.url + "/stats" + ("?reset=1" if reset else ""),
                                    timeout=5) as r:
            return json.loads(r.read())

    def control(self, delay_ms=0, hang=False):
        """Set the answer delay and the hang switch (held answers keep their due time)."""
        with urllib.request.urlopen("%s/control?delay_ms=%s&hang=%d"
                                    % (self.url, delay_ms, 1 if hang else 0), timeout=5) as r:
            return json.loads(r.read())

    def stop(self):
        kill_proc(self.proc)


class OptionsProbe:
    """OPTIONS at a fixed rate from one socket, each answer timed with a µs clock. The
    script answers them before any authentication, so their latency is the time a SIP
    worker takes to become free. A ping unanswered after `timeout` s counts as lost."""

    def __init__(self, port, rate=OPTIONS_PROBE_RATE, timeout=2.0):
        import threading
        self.port, self.every, self.timeout = port, 1.0 / rate, timeout
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.lport = self.sock.getsockname()[1]
        self.sent, self.rtt = {}, {}
        self.halt = threading.Event()
        self.threads = [threading.Thread(target=self._send, daemon=True),
                        threading.Thread(target=self._recv, daemon=True)]

    def start(self):
        for t in self.threads:
            t.start()

    def _send(self):
        nxt = time.perf_counter()
        while not self.halt.is_set():
            cid = secrets.token_hex(8)
            msg = ("OPTIONS sip:127.0.0.1:%d SIP/2.0\r\n"
                   "Via: SIP/2.0/UDP 127.0.0.1:%d;branch=z9hG4bK%s\r\nMax-Forwards: 70\r\n"
                   "From: <sip:ping@%s>;tag=%s\r\nTo: <sip:ping@%s>\r\nCall-ID: %s\r\n"
                   "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
                   % (self.port, self.lport, cid, DOMAIN, cid[:8], DOMAIN, cid)).encode()
            self.sent[cid] = time.perf_counter()
            try:
                self.sock.sendto(msg, ("127.0.0.1", self.port))
            except OSError:
                pass
            nxt += self.every
            self.halt.wait(max(0.0, nxt - time.perf_counter()))

    def _recv(self):
        while not self.halt.is_set() or time.perf_counter() < self.drain_until:
            try:
                data = self.sock.recv(65535)
            except socket.timeout:
                continue
            except OSError:
                return
            t = time.perf_counter()
            m = re.search(rb"\r\nCall-ID:\s*(\S+)", data, re.I)
            if m and m.group(1).decode() in self.sent:
                self.rtt.setdefault(m.group(1).decode(), (t - self.sent[m.group(1).decode()])
                                    * 1000)

    def stop(self):
        self.drain_until = time.perf_counter() + self.timeout
        self.halt.set()
        for t in self.threads:
            t.join(self.timeout + 1)
        self.sock.close()

    drain_until = float("inf")

    def summary(self):
        """{n, lost, p50, p99, max} in ms; a lost ping weighs as +inf in the percentiles."""
        lat = sorted(v for v in self.rtt.values() if v <= self.timeout * 1000)
        lost = len(self.sent) - len(lat)
        allv = lat + [float("inf")] * lost
        return dict(n=len(self.sent), lost=lost, p50=percentile(allv, 0.50),
                    p99=percentile(allv, 0.99), max=allv[-1] if allv else None)


def measure_sso_latency(port, token, n):
    """Sequential introspections on one keep-alive connection, as one OpenSIPS worker
    would send them. -> (p50 ms, p99 ms) seen by the client."""
    import http.client
    auth = "Basic " + base64.b64encode(("%s:%s" % (CLIENT_ID, CLIENT_SECRET)).encode()).decode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    lat = []
    body = ("token=%s&token_type_hint=access_token" % token).encode()
    hdrs = {"Authorization": auth, "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "application/json"}
    for _ in range(n):
        t0 = time.perf_counter()
        conn.request("POST", "/introspect", body=body, headers=hdrs)
        r = conn.getresponse()
        data = r.read()
        lat.append((time.perf_counter() - t0) * 1000)
        if b'"active":true' not in data.replace(b" ", b""):
            raise RuntimeError("SSO said %r" % data[:200])
    conn.close()
    lat.sort()
    return percentile(lat, 0.50), percentile(lat, 0.99)


def percentile(sorted_vals, q):
    if not sorted_vals:
        return None
    return sorted_vals[min(len(sorted_vals) - 1, int(q * len(sorted_vals)))]


def free_tcp_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_tcp(port, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as c:
                c.sendall(b"PING\r\n")
                if c.recv(16).startswith(b"+PONG"):
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("redis-server did not answer on port %d" % port)


# --------------------------------------------------------------------------------------
# OpenSIPS
# --------------------------------------------------------------------------------------

# OpenSIPS sizes each process's reactor to open_files_limit (else the fd rlimit), and its
# reactor checks its whole fd map whenever an fd is added or removed: once per request in
# the async form. 4096 is many times what a worker needs here.
OPEN_FILES = int(os.environ.get("BENCH_OPEN_FILES") or 4096)

CFG_HEAD = """\
# sso_auth benchmark, scenario {name} (generated by bench/run.py)
open_files_limit = {open_files}
log_level = 1
stderror_enabled = yes
syslog_enabled = no
udp_workers = {workers}
socket = udp:127.0.0.1:{port}
mpath = "{mpath}"

loadmodule "proto_udp.so"
loadmodule "signaling.so"
loadmodule "sl.so"
loadmodule "sipmsgops.so"
loadmodule "tm.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
modparam("usrloc", "working_mode_preset", "single-instance-no-db")
"""

CFG_SSO = """
loadmodule "{module}"
modparam("sso_auth", "introspect_url", "{sso}/introspect")
modparam("sso_auth", "token_url", "{sso}/token")
modparam("sso_auth", "client_id", "{client_id}")
modparam("sso_auth", "client_secret", "{client_secret}")
modparam("sso_auth", "secret", "{secret}")
modparam("sso_auth", "http_timeout", 1000)
modparam("sso_auth", "cache_ttl", 3600)
modparam("sso_auth", "token_header", "X-SSO-Token")
# Digest replay table: one slot per nonce until it expires, so it must hold
# (Digest logins/s x nonce_expire) nonces. The defaults (65536 slots, 300 s) refuse logins
# with -3 ("replay table full") from a few hundred logins/s on; 30 s is auth's default.
modparam("sso_auth", "nonce_expire", 30)
modparam("sso_auth", "nonce_slots", 1048576)
"""

# Scenario f: the shared store (README "Running several nodes"), with the short cachedb_redis
# timeouts the README recommends.
CFG_CACHEDB = """
loadmodule "cachedb_redis.so"
modparam("cachedb_redis", "connect_timeout", 100)
modparam("cachedb_redis", "query_timeout", 100)
modparam("sso_auth", "cachedb_url", "redis://127.0.0.1:{redis_port}/")
modparam("sso_auth", "cachedb_timeout", 250)
"""

CFG_NATIVE = """
loadmodule "db_text.so"
loadmodule "auth.so"
loadmodule "auth_db.so"
modparam("auth_db", "db_url", "text://{dbdir}")
modparam("auth_db", "calculate_ha1", 1)
modparam("auth_db", "password_column", "password")
modparam("auth_db", "use_domain", 1)
# auth's replay protection hands out nonces from a fixed pool of 100000 (MAX_NONCE_INDEX,
# compile time) that are held for nonce_expire: with the default 30 s it cannot challenge
# more than ~3300 REGISTERs/s ("no more nonces can be generated"); 10 s lifts that to
# ~10000/s so that the reference is limited by its work, not by that constant.
modparam("auth", "nonce_expire", 10)
"""

AUTH_BLOCK = {
    "none": "",
    "sso": """\
\t\tsso_authorize("");
\t\tif ($rc < 0) {
\t\t\tif ($rc == -5) {
\t\t\t\tsl_send_reply(500, "SSO error");
\t\t\t\texit;
\t\t\t}
\t\t\tsso_challenge("");
\t\t\texit;
\t\t}
""",
    "native": """\
\t\tif (!www_authorize("", "subscriber")) {
\t\t\twww_challenge("", "auth");
\t\t\texit;
\t\t}
""",
}

# The sync form inside a transaction: replies go through tm (send_reply), as the async
# form's resume route does.
AUTH_BLOCK["sso_tm"] = "\t\tt_newtran();\n" + AUTH_BLOCK["sso"].replace("sl_send_reply(",
                                                                        "send_reply(")

# The async form (issue 11): the REGISTER waits in a tm transaction while the SSO answers;
# the resume route reads $rc exactly as the sync script does.
AUTH_BLOCK["sso_async"] = """\
\t\tasync(sso_authorize(""), resume_register);
\t\texit;
"""

CFG_RESUME = """
route[resume_register] {
\tif ($rc < 0) {
\t\tif ($rc == -5) {
\t\t\tsend_reply(500, "SSO error");
\t\t\texit;
\t\t}
\t\tsso_challenge("");
\t\texit;
\t}
\tif (!save("location"))
\t\tsl_reply_error();
\texit;
}
"""

CFG_ROUTE = """
route {{
\tif (is_method("OPTIONS")) {{
\t\tsl_send_reply(200, "Alive");
\t\texit;
\t}}
\tif (is_method("REGISTER")) {{
{auth}\t\tif (!save("location"))
\t\t\tsl_reply_error();
\t\texit;
\t}}
\tif (!is_method("ACK"))
\t\tsl_send_reply(405, "Method Not Allowed");
\texit;
}}
"""


def write_dbtext(dbdir):
    dbdir.mkdir(exist_ok=True)
    (dbdir / "version").write_text(
        "table_name(string) table_version(int) \nsubscriber:8\n")
    rows = [("alice", "alicepw"), ("bob", "bobpw"), ("carol", "carolpw")]
    lines = ["id(int,auto) username(string) domain(string) password(string) "
             "ha1(string,null) ha1_sha256(string,null) ha1_sha512t256(string,null) "]
    for i, (u, p) in enumerate(rows, 1):
        lines.append("%d:%s:%s:%s:::" % (i, u, DOMAIN, p))
    (dbdir / "subscriber").write_text("\n".join(lines) + "\n")


def options_ping(port, timeout=0.3):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind(("127.0.0.1", 0))
        lp = s.getsockname()[1]
        cid = secrets.token_hex(8)
        msg = ("OPTIONS sip:127.0.0.1:%d SIP/2.0\r\n"
               "Via: SIP/2.0/UDP 127.0.0.1:%d;branch=z9hG4bK%s\r\n"
               "Max-Forwards: 70\r\nFrom: <sip:ping@%s>;tag=%s\r\nTo: <sip:ping@%s>\r\n"
               "Call-ID: %s\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
               % (port, lp, cid, DOMAIN, cid, DOMAIN, cid))
        s.sendto(msg.encode(), ("127.0.0.1", port))
        s.settimeout(timeout)
        data, _ = s.recvfrom(65535)
        return data.startswith(b"SIP/2.0 200")
    except OSError:
        return False
    finally:
        s.close()


class OpenSips:
    def __init__(self, name, binary, workdir, cfg_text, port):
        self.name = name
        self.binary = binary
        self.port = port
        self.cfg = workdir / ("opensips-%s.cfg" % name)
        self.logpath = workdir / ("opensips-%s.log" % name)
        self.cfg.write_text(cfg_text)
        self.cmd = [binary, "-F", "-f", str(self.cfg), "-m", "256", "-M", "16",
                    "-w", str(workdir)]
        self.proc = None

    def start(self, timeout=20):
        self._logf = open(self.logpath, "ab")
        self.proc = spawn(self.cmd, stdout=self._logf, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("OpenSIPS (%s) exited with %s at start-up:\n%s"
                                   % (self.name, self.proc.returncode, self.log_tail()))
            if options_ping(self.port):
                return self
            time.sleep(0.1)
        raise RuntimeError("OpenSIPS (%s) did not answer OPTIONS in %ds:\n%s"
                           % (self.name, timeout, self.log_tail()))

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log_text(self):
        try:
            return self.logpath.read_text("utf-8", "replace")
        except OSError:
            return ""

    def log_tail(self, n=30):
        return "\n".join(self.log_text().splitlines()[-n:])

    def stop(self):
        kill_proc(self.proc, grace=8)
        try:
            self._logf.close()
        except Exception:  # noqa: BLE001
            pass


# --------------------------------------------------------------------------------------
# sipp
# --------------------------------------------------------------------------------------

def sipp_cmd(xml, port, rate, calls, keys, stat_file, timeout_s):
    cmd = ["sipp", "127.0.0.1:%d" % port, "-sf", str(xml), "-i", "127.0.0.1", "-p", "0",
           "-t", "u1", "-nd", "-r", str(rate), "-m", str(calls),
           "-recv_timeout", str(RECV_TIMEOUT_MS),
           "-timeout", "%ds" % timeout_s, "-nostdin",
           "-trace_stat", "-stf", str(stat_file), "-fd", "1",
           # sipp writes response times every rtt_freq calls and drops the rest at the end:
           # below 1000 calls per step (slow scenarios walking down) it would write none
           "-trace_rtt", "-rtt_freq", str(max(1, min(1000, calls // 10))),
           "-trace_screen", "-trace_err",
           "-max_recv_loops", "10000", "-max_sched_loops", "10000",
           "-buff_size", str(4 * 1024 * 1024)]
    for k, v in keys.items():
        cmd += ["-key", k, str(v)]
    return cmd


def read_stat(stat_file):
    """Last row of sipp's -trace_stat CSV as a dict (cumulative counters)."""
    try:
        with open(stat_file, newline="") as f:
            rows = list(csv.reader(f, delimiter=";"))
    except OSError:
        return None
    if len(rows) < 2:
        return None
    head = rows[0]
    last = rows[-1]
    return {h: (last[i] if i < len(last) else "") for i, h in enumerate(head)}


def read_rtts(stepdir):
    """{rtd_no: sorted response times in ms} from sipp's -trace_rtt file(s)."""
    out = {}
    for f in stepdir.glob("*_rtt.csv"):
        with open(f) as fh:
            for line in fh:
                parts = line.strip().split(";")
                if len(parts) < 3 or not parts[0][:1].isdigit():
                    continue
                try:
                    v = float(parts[1])
                except ValueError:
                    continue
                out.setdefault(parts[2].strip(), []).append(v)
    for v in out.values():
        v.sort()
    return out


def to_int(s):
    try:
        return int(float(s))
    except (TypeError, ValueError):
        return 0


def elapsed_seconds(s):
    """sipp's ElapsedTime(C) 'HH:MM:SS:mmm' (or with a trailing microsecond part)."""
    parts = (s or "").split(":")
    try:
        h, m, sec = int(parts[0]), int(parts[1]), int(parts[2])
        ms = int(parts[3]) if len(parts) > 3 else 0
        return h * 3600 + m * 60 + sec + ms / 1000.0
    except (ValueError, IndexError):
        return None


class Step:
    """One sipp run at a fixed rate."""

    def __init__(self, rate, calls):
        self.rate = rate
        self.calls = calls
        self.success = self.failed = self.retrans = 0
        self.created = 0
        self.elapsed = None
        self.placed_rate = 0.0
        self.p50 = self.p99 = self.p50_auth = self.p99_auth = None   # probe
        self.sipp_p50 = self.sipp_p99 = None
        self.probe_n = self.probe_fail = 0
        self.probe_why = {}
        self.sso = None
        self.cpu = {}            # name -> CPU seconds used during the step
        self.ok = False
        self.why = ""
        self.cmd = None

    def cpu_text(self):
        """'opensips 143% sipp 40% ...' over the step's wall time."""
        w = getattr(self, "wall", None) or 1.0
        parts = ["%s %.0f%%" % (n, 100 * v / w) for n, v in self.cpu.items()]
        parts.append("others %.0f%%" % self.others_pct())
        if getattr(self, "machine_steal", 0) >= 1:
            parts.append("steal %.0f%%" % self.machine_steal)
        if getattr(self, "udp_drops", 0):
            parts.append("UDP drops %d" % self.udp_drops)
        return " ".join(parts)

    def others_pct(self):
        w = getattr(self, "wall", None) or 1.0
        ours = 100 * sum(self.cpu.values()) / w
        return max(0.0, getattr(self, "machine_busy", 0) - ours)

    def opensips_cpu_us_per_call(self):
        c = self.cpu.get("opensips")
        n = self.success + self.probe_n - self.probe_fail
        return (c * 1e6 / n) if c is not None and n else None

    @property
    def not_ok_calls(self):
        return self.calls - self.success + self.probe_fail

    @property
    def all_calls(self):
        return self.calls + self.probe_n

    def verdict(self):
        fails = self.not_ok_calls
        reasons = []
        if self.calls == 0 or fails / self.all_calls >= FAIL_RATIO_MAX:
            reasons.append("%d/%d calls failed" % (fails, self.all_calls))
            if self.probe_fail:
                reasons.append("probe: %s" % self.probe_why)
        if self.placed_rate < ACHIEVED_MIN * self.rate:
            reasons.append("placed %.0f cps" % self.placed_rate)
        if self.p99 is None or self.p99 >= PROBE_P99_MAX_MS:
            reasons.append("probe p99 %s ms" % (fmt_ms(self.p99)))
        if self.sipp_p99 is None or self.sipp_p99 >= SIPP_P99_MAX_MS:
            reasons.append("sipp p99 %s ms" % (fmt_ms(self.sipp_p99)))
        self.ok = not reasons
        self.why = ", ".join(reasons) if reasons else "ok"
        return self.ok


def fmt_ms(v):
    if v is None:
        return "-"
    if v == float("inf"):
        return "lost"
    return "%.2f" % v if v < 10 else "%.1f" % v if v < 100 else "%.0f" % v


def run_step(workdir, tag, scen, port, rate, seconds, keys, sso=None, probe_args=None,
             groups=None):
    stepdir = workdir / ("%s-%05d" % (tag, rate))
    if stepdir.exists():
        shutil.rmtree(stepdir)
    stepdir.mkdir()
    calls = max(1, int(rate * seconds))
    st = Step(rate, calls)
    stat_file = stepdir / "stat.csv"
    budget = int(seconds * 2 + RECV_TIMEOUT_MS / 1000 + 10)
    cmd = sipp_cmd(SCEN_DIR / scen["xml"], port, rate, calls, keys, stat_file, budget)
    st.cmd = cmd
    if sso is not None:
        sso.stats(reset=True)
    probe = None
    if probe_args is not None:
        probe = Probe(port, scen["probe"], rate=PROBE_RATE, **probe_args)
        probe.start()
    groups = dict(groups or {})
    cpu0 = {n: group_cpu_seconds(g) for n, g in groups.items()}
    ru_self = resource.getrusage(resource.RUSAGE_SELF)
    self_cpu0 = ru_self.ru_utime + ru_self.ru_stime
    m0 = machine_cpu()
    drops0 = udp_rcvbuf_errors()
    t0 = time.monotonic()
    p = spawn(cmd, cwd=stepdir, stdout=subprocess.DEVNULL, stderr=open(stepdir / "sipp.err", "wb"))
    sipp_cpu = None
    while time.monotonic() - t0 < budget + 15:
        # reap sipp ourselves to get its exact CPU time
        try:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        except ChildProcessError:
            break
        if pid:
            sipp_cpu = ru.ru_utime + ru.ru_stime
            p.returncode = os.waitstatus_to_exitcode(status)
            break
        time.sleep(0.05)
    for n, g in groups.items():
        st.cpu[n] = group_cpu_seconds(g) - cpu0[n]
    if sipp_cpu is not None:
        st.cpu["sipp"] = sipp_cpu
    ru_self = resource.getrusage(resource.RUSAGE_SELF)
    st.cpu["probe"] = ru_self.ru_utime + ru_self.ru_stime - self_cpu0
    st.wall = time.monotonic() - t0
    m1 = machine_cpu()
    dt = max(1, m1[2] - m0[2])
    st.machine_busy = (m1[0] - m0[0]) / dt * (os.cpu_count() or 1) * 100
    st.machine_steal = (m1[1] - m0[1]) / dt * (os.cpu_count() or 1) * 100
    st.udp_drops = udp_rcvbuf_errors() - drops0
    kill_proc(p, grace=2)
    CHILDREN.remove(p)
    if probe is not None:
        probe.stop()
        lat, lat_auth = sorted(probe.lat), sorted(probe.lat_auth)
        st.probe_n = len(lat) + probe.failures
        st.probe_fail = probe.failures
        st.probe_why = probe.fail_reasons
        st.p50, st.p99 = percentile(lat, 0.50), percentile(lat, 0.99)
        if lat_auth:
            st.p50_auth, st.p99_auth = percentile(lat_auth, 0.50), percentile(lat_auth, 0.99)
    wall = time.monotonic() - t0
    stat = read_stat(stat_file)
    if stat:
        st.created = to_int(stat.get("TotalCallCreated"))
        st.success = to_int(stat.get("SuccessfulCall(C)"))
        st.failed = to_int(stat.get("FailedCall(C)"))
        st.retrans = to_int(stat.get("Retransmissions(C)"))
        st.elapsed = elapsed_seconds(stat.get("ElapsedTime(C)")) or wall
    else:
        st.elapsed = wall
    # rate at which sipp placed the calls: all calls are placed by (calls - 1) / rate
    # seconds when sipp keeps up; measure from the per-second rows instead of the end
    st.placed_rate = placed_rate(stat_file, calls)
    rtts = read_rtts(stepdir)
    r1 = rtts.get("1", [])
    st.sipp_p50, st.sipp_p99 = percentile(r1, 0.50), percentile(r1, 0.99)
    if sso is not None:
        st.sso = sso.stats()
    st.verdict()
    return st


def placed_rate(stat_file, calls):
    """calls / time until sipp had created all of them (from the per-second rows)."""
    try:
        with open(stat_file, newline="") as f:
            rows = list(csv.reader(f, delimiter=";"))
    except OSError:
        return 0.0
    if len(rows) < 2:
        return 0.0
    head = rows[0]
    try:
        i_el = head.index("ElapsedTime(C)")
        i_cr = head.index("TotalCallCreated")
    except ValueError:
        return 0.0
    prev_t, prev_c = 0.0, 0
    for r in rows[1:]:
        t = elapsed_seconds(r[i_el]) or 0.0
        c = to_int(r[i_cr])
        if c >= calls:
            # interpolate inside the last period
            if c > prev_c and t > prev_t:
                t_all = prev_t + (calls - prev_c) * (t - prev_t) / (c - prev_c)
            else:
                t_all = t
            return calls / max(t_all, 1e-3)
        prev_t, prev_c = t, c
    t = elapsed_seconds(rows[-1][i_el]) or 1.0
    return to_int(rows[-1][i_cr]) / max(t, 1e-3)


# --------------------------------------------------------------------------------------
# the search
# --------------------------------------------------------------------------------------

def search(workdir, key, scen, port, keys_for, sso, alive, probe_args, groups):
    """Step the rate up; return (best passing Step or None, all steps)."""
    steps = []

    def one(rate):
        st = run_step(workdir, key, scen, port, rate, STEP_SECONDS, keys_for(rate), sso,
                      probe_args, groups)
        steps.append(st)
        log("  %s %6d cps  placed %6.0f  ok %6d/%-6d  retrans %5d  probe p50 %5s p99 %5s  "
            "sipp p99 %4s ms  cpu %s  %s"
            % (key, rate, st.placed_rate, st.success, st.calls, st.retrans,
               fmt_ms(st.p50), fmt_ms(st.p99), fmt_ms(st.sipp_p99), st.cpu_text(),
               "PASS" if st.ok else "FAIL: " + st.why))
        if not alive():
            raise RuntimeError("OpenSIPS died during scenario %s" % key)
        time.sleep(1.0)    # let queues drain before the next step
        return st

    best, worst = None, None
    rate = FIRST_RATE
    while rate <= MAX_RATE:
        st = one(rate)
        if st.ok:
            best = st
            rate *= 2
        else:
            worst = st
            break
    if best is None:
        # even the first rate fails: walk down
        rate = FIRST_RATE // 2
        while rate >= 25:
            st = one(rate)
            if st.ok:
                best = st
                break
            worst = st
            rate //= 2
    if best is not None and worst is not None:
        lo, hi = best.rate, worst.rate
        for _ in range(REFINES):
            if (hi - lo) <= max(25, lo * 0.08):
                break
            mid = int(round((lo + hi) / 2 / 25.0)) * 25
            if mid <= lo or mid >= hi:
                break
            st = one(mid)
            if st.ok:
                lo, best = mid, st
            else:
                hi = mid
    return best, steps


# --------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------

def main():
    t_start = time.monotonic()
    binary = find_opensips()
    version, version_line = opensips_version(binary)
    modules_dir = find_modules_dir(binary)
    module = find_module()
    wanted = os.environ.get("BENCH_SCENARIOS") or "a,b,c,d,e,f"
    for g, members in GROUPS.items():
        wanted = re.sub(r"(?<![\w])%s(?![\w])" % g, members, wanted)
    selected = []
    for s_ in (x.strip() for x in wanted.split(",")):
        if s_ and s_ not in selected:
            selected.append(s_)
    for s in selected:
        if s not in SCENARIOS:
            sys.exit("unknown scenario %r (choose among %s)" % (s, ",".join(SCENARIOS)))
    if module is None and any(uses_sso(s) for s in selected):
        log("sso_auth module not found (build it or set SSO_AUTH_MODULE): running only a and e")
        selected = [s for s in selected if not uses_sso(s)]
    if shutil.which("sipp") is None:
        sys.exit("sipp not found on PATH (Debian package sip-tester)")
    early_notes = []
    if "f" in selected and (shutil.which("redis-server") is None
                            or not (modules_dir / "cachedb_redis.so").exists()):
        why = ("redis-server not installed" if shutil.which("redis-server") is None
               else "no cachedb_redis.so in %s" % modules_dir)
        log("scenario f left out: %s" % why)
        early_notes.append("scenario f (Digest with cachedb_url) not run: %s" % why)
        selected = [s for s in selected if s != "f"]

    workdir = Path(tempfile.mkdtemp(prefix="sso-bench-"))
    mpath = workdir / "modules"
    mpath.mkdir()
    for so in modules_dir.glob("*.so"):
        (mpath / so.name).symlink_to(so)
    module_copy = None
    if module is not None:
        module_copy = workdir / "sso_auth.so"
        shutil.copy2(module, module_copy)    # a rebuild during the run must not touch it
    dbdir = workdir / "dbtext"
    write_dbtext(dbdir)
    log("OpenSIPS %s, modules %s, module %s, work dir %s" % (version, modules_dir, module,
                                                            workdir))
    log("mode: %s, %.0f s per step, first rate %d cps"
        % ("QUICK" if QUICK else "full", STEP_SECONDS, FIRST_RATE))

    fixed_token = "bench-fixed-" + secrets.token_hex(16)      # registered up front
    sso = None
    results = {}
    notes = early_notes
    redis = None
    sso_latency = None
    commands = {}
    skipped = {}        # key -> why (a scenario OpenSIPS refused to start)
    optres = {}         # key -> OPTIONS figures of the oh/oha scenarios
    try:
        if any(uses_sso(s) for s in selected):
            sso = FastSso(workdir, {fixed_token: USER}).start()
            n = 300 if QUICK else 2000
            sso_latency = measure_sso_latency(sso.port, fixed_token, n) + (n,)
            log("fast SSO on %s: idle latency over %d sequential keep-alive requests: "
                "p50 %.3f ms, p99 %.3f ms" % (sso.url, n, sso_latency[0], sso_latency[1]))
            sso.stats(reset=True)
            commands["sso"] = " ".join(sso.cmd)
        if any(SCENARIOS[s].get("cachedb") for s in selected):
            redis_port = free_tcp_port()
            redis = spawn(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                           "--save", "", "--appendonly", "no", "--dir", str(workdir)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
            wait_tcp(redis_port)
            commands["redis"] = " ".join(redis.args)
            log("redis-server on 127.0.0.1:%d (scenario f)" % redis_port)

        def scenario_cfg(key, port):
            scen = SCENARIOS[key]
            cfg = CFG_HEAD.format(name=key, workers=UDP_WORKERS, port=port, mpath=mpath,
                                  open_files=OPEN_FILES)
            if uses_sso(key):
                cfg += CFG_SSO.format(module=module_copy, sso=sso.url, client_id=CLIENT_ID,
                                      client_secret=CLIENT_SECRET,
                                      secret=secrets.token_hex(24))
                if scen.get("cachedb"):
                    cfg += CFG_CACHEDB.format(redis_port=redis_port)
                cfg += scen.get("params", "")
            elif scen["auth"] == "native":
                cfg += CFG_NATIVE.format(dbdir=dbdir)
            cfg += CFG_ROUTE.format(auth=AUTH_BLOCK[scen["auth"]])
            if scen["auth"] == "sso_async":
                cfg += CFG_RESUME
            return cfg

        for key in selected:
            scen = SCENARIOS[key]
            port = free_udp_port()
            osips = OpenSips(key, binary, workdir, scenario_cfg(key, port), port)
            log("scenario %s: starting OpenSIPS on udp:127.0.0.1:%d" % (scen["title"], port))
            try:
                osips.start()
            except RuntimeError as e:
                need = scen.get("needs_param")
                if not need:
                    raise
                # a modparam the module does not know yet: OpenSIPS refuses the config
                why = ("skipped: modparam missing" if need in osips.log_text()
                       else "skipped: OpenSIPS did not start")
                log("  %s (%s)" % (why, str(e).splitlines()[0]))
                skipped[key] = why
                osips.stop()
                CHILDREN[:] = [c for c in CHILDREN if c.poll() is None]
                continue
            if sso:
                sso.control(scen.get("delay_ms", 0), scen.get("hang", False))
            try:
                if scen.get("options"):
                    optres[key] = options_under_hang(workdir, key, scen, port, osips)
                    commands[key] = (osips.cmd, optres[key]["cmd"])
                    continue
                run_id = [0]

                def keys_for(rate, key=key):
                    run_id[0] += 1
                    if key == "b":
                        return {"token": fixed_token}
                    if SCENARIOS[key]["xml"] == "c_token_per_call.xml":
                        return {"run": "%s%d" % (key, run_id[0])}
                    return {}

                before = sso.stats() if sso else None
                # warm-up (not measured): first introspection, usrloc record, sockets
                warm = run_step(workdir, key + "-warmup", scen, port, 50, 1 if QUICK else 2,
                                keys_for(50))
                if warm.success != warm.calls:
                    log("  warm-up: %d/%d calls ok (%s); see %s" % (
                        warm.success, warm.calls, warm.why, workdir))
                probe_args = {"token": fixed_token} if key == "b" else {}
                groups = {"opensips": osips.proc.pid}
                if sso:
                    groups["sso"] = sso.proc.pid
                best, steps = search(workdir, key, scen, port, keys_for, sso, osips.alive,
                                     probe_args, groups)
                after = sso.stats() if sso else None
                crash = [ln for ln in osips.log_text().splitlines() if CRASH_RE.search(ln)]
                res = dict(key=key, title=scen["title"], best=best, steps=steps,
                           warm=warm, crash=crash[:5], cfg=osips.cfg)
                if sso:
                    res["sso_delta"] = {
                        ep: after["counts"].get(ep, 0) - before["counts"].get(ep, 0)
                        for ep in ("introspect", "token")}
                    res["fixed_token_introspections"] = (
                        after["token_counts"].get(fixed_token, 0)
                        - before["token_counts"].get(fixed_token, 0))
                    res["calls_total"] = sum(s.calls for s in steps) + warm.calls
                    res["success_total"] = sum(s.success for s in steps) + warm.success
                results[key] = res
                commands[key] = (osips.cmd, steps[-1].cmd if steps else warm.cmd)
                if crash:
                    notes.append("scenario %s: OpenSIPS log has crash-like lines: %s"
                                 % (key, crash[:3]))
                if key == "b":
                    log("  scenario b: introspections of the one token: %d (expected 1)"
                        % res["fixed_token_introspections"])
            finally:
                if sso:
                    sso.control(0, False)
                osips.stop()
                CHILDREN[:] = [c for c in CHILDREN if c.poll() is None]
        if AB_ROUNDS:
            rounds = ab_rounds(workdir, scenario_cfg, binary, fixed_token)
    finally:
        if sso:
            sso.stop()
        if redis is not None:
            kill_proc(redis)
        kill_all()

    text = report(version, version_line, binary, module, results, sso_latency, commands,
                  notes, time.monotonic() - t_start)
    table = async_table(results, skipped, optres, selected)
    if AB_ROUNDS:
        table += ab_table(rounds)
    if table:
        text = text.replace("\n## Every step\n", "\n" + table + "\n## Every step\n", 1)
    out = HERE / ("results-%s%s%s.md" % (version,
                                          "" if UDP_WORKERS == 4 else "-w%d" % UDP_WORKERS,
                                          "-quick" if QUICK else ""))
    out.write_text(text)
    dump_json(out.with_suffix(".json"), results, sso_latency, skipped, optres)
    print()
    print(text)
    if table:
        print(table)
    log("written %s" % out)
    if os.environ.get("BENCH_KEEP"):
        log("work directory kept: %s" % workdir)
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def ab_rounds(workdir, scenario_cfg, binary, fixed_token):
    """a and b alternately, AB_ROUNDS times, one step each at AB_RATE cps: OpenSIPS CPU per
    REGISTER of each. Alternating spreads the machine's drift (other load, steal, turbo)
    over both, which one search per scenario does not."""
    out = []
    for i in range(AB_ROUNDS):
        row = {}
        for key in ("a", "b"):
            scen = SCENARIOS[key]
            port = free_udp_port()
            osips = OpenSips("%s-round%d" % (key, i + 1), binary, workdir,
                             scenario_cfg(key, port), port)
            osips.start()
            try:
                keys = {"token": fixed_token} if key == "b" else {}
                run_step(workdir, "%s-round%d-warmup" % (key, i + 1), scen, port, 50, 1, keys)
                st = run_step(workdir, "%s-round%d" % (key, i + 1), scen, port, AB_RATE,
                              STEP_SECONDS, keys, None, {"token": fixed_token} if key == "b"
                              else {}, {"opensips": osips.proc.pid})
                row[key] = st.opensips_cpu_us_per_call() if st.ok else None
                log("  round %d %s: %s µs OpenSIPS CPU per REGISTER at %d cps%s"
                    % (i + 1, key, "%.2f" % row[key] if row[key] else "-", AB_RATE,
                       "" if st.ok else " (step failed: %s)" % st.why))
            finally:
                osips.stop()
                CHILDREN[:] = [c for c in CHILDREN if c.poll() is None]
        out.append(row)
    return out


def ab_table(rounds):
    """Markdown: per round a, b and a/b, then the median of a/b."""
    L = ["", "### Cached token against no auth, %d alternating rounds at %d cps"
         % (len(rounds), AB_RATE), "",
         "| round | a: no auth, µs/REGISTER | b: cached token, µs/REGISTER | a/b |",
         "|---:|---:|---:|---:|"]
    ratios = []
    for i, r in enumerate(rounds, 1):
        a, b = r.get("a"), r.get("b")
        ratio = a / b if a and b else None
        if ratio:
            ratios.append(ratio)
        L.append("| %d | %s | %s | %s |" % (i, "%.2f" % a if a else "-",
                                           "%.2f" % b if b else "-",
                                           "%.3f" % ratio if ratio else "-"))
    if ratios:
        med = sorted(ratios)[len(ratios) // 2]
        L.append("")
        L.append("Median a/b: **%.3f** (target >= 0.95: %s)." % (med, "met" if med >= 0.95
                                                                  else "NOT met"))
    L.append("")
    return "\n".join(L)


def options_under_hang(workdir, key, scen, port, osips):
    """One step of new-token REGISTERs at OPTIONS_LOAD_RATE with the SSO hanging, OPTIONS
    timed beside it. -> {n, lost, p50, p99, max, sipp_ok, calls, cmd}"""
    probe = OptionsProbe(port)
    probe.start()
    time.sleep(0.3)
    st = run_step(workdir, key, scen, port, OPTIONS_LOAD_RATE, STEP_SECONDS,
                  {"run": "%s%s" % (key, secrets.token_hex(3))})
    probe.stop()
    out = probe.summary()
    out.update(sipp_ok=st.success, calls=st.calls, cmd=st.cmd)
    log("  %s: %d OPTIONS beside %d REGISTERs/s (SSO hanging): p50 %s p99 %s max %s ms, "
        "%d lost" % (key, out["n"], OPTIONS_LOAD_RATE, fmt_ms(out["p50"]), fmt_ms(out["p99"]),
                     fmt_ms(out["max"]), out["lost"]))
    if not osips.alive():
        raise RuntimeError("OpenSIPS died during scenario %s" % key)
    return out


def async_table(results, skipped, optres, selected):
    """The markdown table of BENCHMARKS.md "Async SSO calls (issue 11)", or "" when none
    of its scenarios ran."""
    mine = {"ca", "da", "ct", "dt", "c20", "c20a", "d20", "d20a", "c20a8", "c20a32", "c20a64",
            "oh", "oha"}
    if not mine & set(selected):
        return ""

    def rate(k):
        if k in skipped:
            return None, skipped[k]
        r = results.get(k)
        if not r:
            return None, "not run"
        if r["best"] is None:
            worst = r["steps"][-1].rate if r["steps"] else 0
            return None, "< %d" % worst
        return r["best"].rate, "%d" % r["best"].rate

    def ratio_row(label, ks, ka, target):
        (vs, ts), (va, ta) = rate(ks), rate(ka)
        ratio = "%.2f" % (va / vs) if vs and va else "-"
        met = ""
        if vs and va:
            met = "met" if va / vs >= target else "NOT met"
        return "| %s | %s | %s | %s | >= %g %s |" % (label, ts, ta, ratio, target, met)

    L = ["## Async SSO calls (issue 11)", "",
         "| measure | sync | async | async / sync | target |", "|---|---:|---:|---:|---|"]
    L.append(ratio_row("c20: new token per REGISTER, SSO 20 ms, max cps", "c20", "c20a", 20))
    L.append(ratio_row("d20: Digest login, SSO 20 ms, max cps", "d20", "d20a", 20))
    L.append(ratio_row("c: new token per REGISTER, SSO 0 ms, max cps", "c", "ca", 0.95))
    L.append(ratio_row("d: Digest login, SSO 0 ms, max cps", "d", "da", 0.95))
    L.append(ratio_row("ct: c, sync form in a tm transaction, max cps", "ct", "ca", 0.95))
    L.append(ratio_row("dt: d, sync form in a tm transaction, max cps", "dt", "da", 0.95))
    for sync_k, async_k in (("c", "ca"), ("ct", "ca"), ("d", "da"), ("dt", "da")):
        pair = cpu_pair(results.get(async_k), results.get(sync_k))
        if pair:
            rate_, c_async, c_sync = pair
            L.append("| OpenSIPS CPU µs/request at %d cps: %s (sync) vs %s (async) | %.1f | %.1f "
                     "| sync/async %.2f | >= 0.95 %s |"
                     % (rate_, sync_k, async_k, c_sync, c_async, c_sync / c_async,
                        "met" if c_sync / c_async >= 0.95 else "NOT met"))
    o_s, o_a = optres.get("oh"), optres.get("oha")

    def opt(o):
        if not o:
            return "not run"
        return "%s (max %s, %d/%d lost)" % (fmt_ms(o["p99"]), fmt_ms(o["max"]), o["lost"],
                                            o["n"])
    met = ""
    if o_a:
        met = "met" if o_a["p99"] < 10 else "NOT met"
    L.append("| OPTIONS p99 ms, SSO hanging, %d new-token REGISTERs/s | %s | %s | - | async "
             "< 10 ms %s |" % (OPTIONS_LOAD_RATE, opt(o_s), opt(o_a), met))
    for n in (8, 32, 64):
        L.append("| c20a with sso_max_connections %d, max cps | - | %s | - | - |"
                 % (n, rate("c20a%d" % n)[1]))
    pair = cpu_pair(results.get("b"), results.get("a"))
    if pair:
        rate_, cb, ca_ = pair
        L.append("| OpenSIPS CPU µs/request at %d cps: b (cached token) vs a (no auth) | "
                 "a %.1f | b %.1f | b/a %.2f | - |" % (rate_, ca_, cb, cb / ca_))
    else:
        L.append("| OpenSIPS CPU µs/request: b (cached token) vs a (no auth) | not run | "
                 "not run | - | - |")
    L.append("")
    L.append("Max cps from the rate search (same pass criteria as above); SSO delay from "
             "fast_sso.py, which holds answers without serializing them. OPTIONS: %.0f/s "
             "timed with a µs clock beside one %.0f s step of REGISTERs, a lost one (no answer "
             "in 2 s) counting as infinite." % (OPTIONS_PROBE_RATE, STEP_SECONDS))
    L.append("")
    return "\n".join(L)


def cpu_at_common(r):
    if not r:
        return None
    s = next((s for s in r["steps"] if s.rate == COMMON_RATE and s.ok), None)
    return s.opensips_cpu_us_per_call() if s else None


def cpu_pair(rn, rd):
    """(rate, µs/call of rn, µs/call of rd) at the highest rate both scenarios passed."""
    if not rn or not rd:
        return None
    a = {s.rate: s for s in rn["steps"] if s.ok}
    b = {s.rate: s for s in rd["steps"] if s.ok}
    common = sorted(set(a) & set(b))
    if not common:
        return None
    r = common[-1]
    cn, cd = a[r].opensips_cpu_us_per_call(), b[r].opensips_cpu_us_per_call()
    return (r, cn, cd) if cn and cd else None


def dump_json(path, results, sso_latency, skipped=None, optres=None):
    out = {"sso_latency_ms": sso_latency, "scenarios": {}, "skipped": skipped or {},
           "options_under_hang": {k: {kk: vv for kk, vv in v.items() if kk != "cmd"}
                                  for k, v in (optres or {}).items()}}
    for key, r in results.items():
        out["scenarios"][key] = {
            "title": r["title"],
            "best_rate": r["best"].rate if r["best"] else None,
            "sso_delta": r.get("sso_delta"),
            "fixed_token_introspections": r.get("fixed_token_introspections"),
            "steps": [{k: v for k, v in vars(s).items() if k != "cmd"} for s in r["steps"]],
        }
    path.write_text(json.dumps(out, indent=1, default=str))


def report(version, version_line, binary, module, results, sso_latency, commands, notes,
           duration):
    L = []
    L.append("# sso_auth benchmark — OpenSIPS %s%s" % (version, " (QUICK run)" if QUICK else ""))
    L.append("")
    L.append("Run on %s, %.0f s in all; steps of %.0f s; a step passes with < %.1f %% failed "
             "calls, >= %d %% of the asked rate placed by sipp, probe p99 < %.0f ms and sipp "
             "p99 < %.0f ms."
             % (time.strftime("%Y-%m-%d %H:%M"), duration, STEP_SECONDS,
                FAIL_RATIO_MAX * 100, ACHIEVED_MIN * 100, PROBE_P99_MAX_MS,
                SIPP_P99_MAX_MS))
    L.append("")
    L.append("| scenario | max rate (cps) | p50 ms | p99 ms | failures | "
             "p50 / p99 ms at %d cps | OpenSIPS CPU µs/call at %d cps | other load |"
             % (FIRST_RATE, COMMON_RATE))
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|")
    for key, r in results.items():
        b = r["best"]
        first = next((s for s in r["steps"] if s.rate == FIRST_RATE), None)
        light = ("%s / %s" % (fmt_ms(first.p50), fmt_ms(first.p99))) if first else "-"
        cpu = cpu_at_common(r)
        cpu = "%.0f" % cpu if cpu else "-"
        others = ("%.0f%%" % (sum(s.others_pct() for s in r["steps"]) / len(r["steps"]))
                  if r["steps"] else "-")
        if b is None:
            worst = r["steps"][-1] if r["steps"] else None
            L.append("| %s | < %d | - | - | %s | %s | %s | %s |" % (
                r["title"], worst.rate if worst else 0,
                ("%d/%d (%s)" % (worst.not_ok_calls, worst.all_calls, worst.why))
                if worst else "-", light, cpu, others))
            continue
        L.append("| %s | %d | %s | %s | %d/%d | %s | %s | %s |" % (
            r["title"], b.rate, fmt_ms(b.p50), fmt_ms(b.p99), b.not_ok_calls, b.all_calls,
            light, cpu, others))
    L.append("")
    L.append("cps = calls per second; one call = one REGISTER for a, b, c, two REGISTERs "
             "(401, then 200) for d, e and f. p50/p99 = response time of the latency probe "
             "(%.0f exchanges/s beside sipp, timed with a µs clock): first REGISTER sent -> "
             "200 OK received, the whole exchange for d, e and f. failures = calls without "
             "their 200 OK (sipp and probe) / all calls of the step. OpenSIPS CPU µs/call = "
             "CPU time of all OpenSIPS processes during the step / answered calls (it includes "
             "fixed costs such as timer processes, which weigh more at low rates). other load "
             "= CPU used on the machine by processes not started by the benchmark, averaged "
             "over the scenario's steps (200%% = both cores): when it is high, the max rate "
             "is depressed." % PROBE_RATE)
    L.append("")

    def rate(k):
        r = results.get(k)
        return r["best"].rate if r and r["best"] else None

    L.append("## Ratios and targets")
    L.append("")
    for num, den, target, label in (("b", "a", 0.95, "b/a (token cache hit vs no auth)"),
                                    ("d", "e", 0.80, "d/e (sso_auth Digest vs auth_db)")):
        rn, rd = rate(num), rate(den)
        if rn is None or rd is None:
            L.append("* %s: not measured" % label)
            continue
        ratio = rn / rd
        L.append("* %s = %d / %d = **%.2f** — target >= %.2f: %s"
                 % (label, rn, rd, ratio, target, "met" if ratio >= target else "NOT met"))
    if rate("d") and rate("f"):
        L.append("* f/d (Digest login with cachedb_url vs without, same run) = %d / %d = "
                 "**%.2f**" % (rate("f"), rate("d"), rate("f") / rate("d")))
    for num, den, label in (("b", "a", "b vs a"), ("d", "e", "d vs e"),
                            ("f", "d", "f vs d (cachedb_url)")):
        pair = cpu_pair(results.get(num), results.get(den))
        if pair:
            rate_, cn, cd = pair
            L.append("* CPU view, %s: OpenSIPS spends %.1f vs %.1f µs per call at %d cps "
                     "(highest rate both passed; fixed costs weigh less there), i.e. the rate "
                     "ratio would be **%.2f** if OpenSIPS's CPU were the limit"
                     % (label, cn, cd, rate_, cd / cn))
    if sso_latency:
        L.append("* SSO answer time (fast_sso, idle, %d sequential keep-alive requests, "
                 "client side): p50 %.3f ms, p99 %.3f ms — target < 1 ms: %s"
                 % (sso_latency[2], sso_latency[0], sso_latency[1],
                    "met" if sso_latency[1] < 1 else "p50 met" if sso_latency[0] < 1
                    else "NOT met"))
    L.append("")

    if any("sso_delta" in r for r in results.values()):
        L.append("## SSO requests")
        L.append("")
        L.append("| scenario | calls (all steps) | 200 OK | /introspect | /token | "
                 "SSO service p50 / p99 µs at max rate |")
        L.append("|---|---:|---:|---:|---:|---:|")
        for key, r in results.items():
            if "sso_delta" not in r:
                continue
            b = r["best"]
            svc = "-"
            if b is not None and b.sso and b.sso.get("answers"):
                svc = "%s / %s" % (b.sso["service_us_p50"], b.sso["service_us_p99"])
            L.append("| %s | %d | %d | %d | %d | %s |" % (
                r["title"], r["calls_total"], r["success_total"],
                r["sso_delta"]["introspect"], r["sso_delta"]["token"], svc))
        if "b" in results:
            n = results["b"]["fixed_token_introspections"]
            L.append("")
            L.append("Scenario b: the one token was introspected **%d** time(s) over the "
                     "whole scenario (expected exactly 1: the cache is shared by all "
                     "workers)%s." % (n, "" if n == 1 else " — NOT as expected"))
        L.append("")

    L.append("## Every step")
    L.append("")
    L.append("| scenario | asked cps | placed cps | sipp 200 OK / calls | probe failed / "
             "exchanges | sipp retrans | probe p50 / p99 ms | probe p50 / p99 ms, "
             "authenticated REGISTER | sipp p99 ms (4 ms clock) | CPU (100% = one core) "
             "| verdict |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|")
    for key, r in results.items():
        for s in r["steps"]:
            auth = ("%s / %s" % (fmt_ms(s.p50_auth), fmt_ms(s.p99_auth))
                    if s.p50_auth is not None else "")
            L.append("| %s | %d | %.0f | %d/%d | %d/%d | %d | %s / %s | %s | %s | %s | %s |"
                     % (key, s.rate, s.placed_rate, s.success, s.calls, s.probe_fail,
                        s.probe_n, s.retrans, fmt_ms(s.p50), fmt_ms(s.p99), auth,
                        fmt_ms(s.sipp_p99), s.cpu_text(), "pass" if s.ok else s.why))
    L.append("")

    L.append("## Machine")
    L.append("")
    for k, v in machine_facts(binary, version_line, module):
        L.append("* %s: %s" % (k, v))
    L.append("* OpenSIPS: udp_workers=%d, log_level=1, -m 256 -M 16; sipp, OpenSIPS and the "
             "SSO share the same cores" % UDP_WORKERS)
    L.append("")
    L.append("## Commands")
    L.append("")
    L.append("```")
    env = ["OPENSIPS=%s" % binary]
    if QUICK:
        env.append("BENCH_QUICK=1")
    if UDP_WORKERS != 4:
        env.append("BENCH_UDP_WORKERS=%d" % UDP_WORKERS)
    if os.environ.get("BENCH_SCENARIOS"):
        env.append("BENCH_SCENARIOS=%s" % os.environ["BENCH_SCENARIOS"])
    L.append("%s python3 bench/run.py" % " ".join(env))
    if "sso" in commands:
        L.append("# SSO:")
        L.append(commands["sso"])
    for key in results:
        if key in commands:
            ocmd, scmd = commands[key]
            L.append("# scenario %s (config: bench/run.py CFG_*; last step shown):" % key)
            L.append(" ".join(str(a) for a in ocmd))
            L.append(" ".join(str(a) for a in scmd))
    L.append("```")
    if notes:
        L.append("")
        L.append("## Notes")
        L.append("")
        for n in notes:
            L.append("* " + n)
    L.append("")
    return "\n".join(L)


if __name__ == "__main__":
    def _sig(signum, _frame):
        kill_all()
        sys.exit(128 + signum)
    signal.signal(signal.SIGTERM, _sig)
    signal.signal(signal.SIGINT, _sig)
    try:
        sys.exit(main())
    finally:
        kill_all()
