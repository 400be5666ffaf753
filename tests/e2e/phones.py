#!/usr/bin/env python3
"""Real SIP user agents against examples/opensips.cfg (issue 10).

    python3 tests/e2e/phones.py            # every phone
    python3 tests/e2e/phones.py -k baresip # only cases whose name contains "baresip"

OpenSIPS runs the example configuration itself, rendered as `make demo` renders it (only
mpath, the listening sockets, the SSO URLs and logging change; default modparams), with the
test SSO of tests/e2e/sso_server.py behind it. Each phone registers with Digest (the SSO
verifies it), calls bob through the proxy part (407, Digest, relayed to bob's binding; bob is
a small answering UA of this file) and unregisters. Each case checks what the SSO saw and
that OpenSIPS is still alive. A phone whose package is missing is skipped loudly.

Phones: baresip (Debian baresip-core), linphonec (linphone-cli), sipsak, PJSUA2 (PyPI
pjsua2-python; tests/e2e/pjsua2_ua.py drives it), plus a WebSocket SIP client
(tests/e2e/ws_sip.py) for proto_ws: token accepted, 401 with the Bearer challenge, Digest
login with the token in the 200 OK.

Environment: OPENSIPS, OPENSIPS_MODULES_DIR, SSO_AUTH_MODULE as for tests/e2e/run.py;
E2E_KEEP=1 keeps the work directory. The last line is `phones: N passed, N failed, N skipped`;
exit status 1 when anything failed.
"""

import argparse
import hashlib
import json
import os
import pty
import re
import secrets
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "examples"))

from run import (CRASH_PATTERNS, Fail, LogFile, finish_suite, Skip, check, eq, find_modules_dir,  # noqa: E402
                 find_opensips, free_udp_port, stop_process_group)
from sip import SipClient, SipError, digest_credentials, parse_message  # noqa: E402
from sso_server import SsoServer  # noqa: E402
from demo import render_example_cfg  # noqa: E402

DOMAIN = "example.com"
PASSWORDS = {"alice": "alicepw", "bob": "bobpw", "carol": "carolpw"}


def free_tcp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def note(text):
    print("    " + text, flush=True)


# --------------------------------------------------------------------------------------
# bob: the callee
# --------------------------------------------------------------------------------------

SDP = ("v=0\r\no=bob 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       "m=audio %d RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
       "a=sendrecv\r\n")


class Callee:
    """A user registered through the example configuration with Digest (the suite's own
    client), answering INVITE with 200 OK and SDP, and ACK/BYE/OPTIONS/CANCEL as a phone
    would. `seen` lists (method, From URI, message) of what OpenSIPS relayed to it."""

    def __init__(self, port, user="bob", password="bobpw"):
        self.client = SipClient(port, user=user, domain=DOMAIN)
        self.password = password
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtp.bind(("127.0.0.1", 0))
        self.seen = []
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None

    def start(self):
        c = self.client
        _req, r = c.request("REGISTER", expires=3600)
        if r.status != 401 or not r.digest_challenges():
            raise Fail("callee REGISTER without credentials: expected 401 with Digest, got %d"
                       % r.status)
        ch = r.digest_challenges()[-1]
        value, _ = digest_credentials(ch, "REGISTER", "sip:%s" % DOMAIN, c.user, self.password)
        _req, r = c.request("REGISTER", headers=[("Authorization", value)], expires=3600)
        if r.status != 200:
            raise Fail("callee Digest REGISTER: expected 200, got %d %s" % (r.status, r.reason))
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        if self._thread:
            self._thread.join(2)
        self.client.close()
        self.rtp.close()

    def methods(self, since=0):
        with self.lock:
            return [m for m, _f, _x in self.seen[since:]]

    def mark(self):
        with self.lock:
            return len(self.seen)

    def _reply(self, req, status, reason, body=b"", extra=()):
        keep = ("via", "from", "to", "call-id", "cseq")
        if req.method == "INVITE":
            keep += ("record-route",)
        lines = ["SIP/2.0 %d %s" % (status, reason)]
        for n, v in req.headers:
            ln = n.lower()
            if ln == "v":
                ln = "via"
            if ln in ("t", "to"):
                if status > 100 and "tag=" not in v:
                    v += ";tag=" + self.tag
                lines.append("To: " + v)
            elif ln in keep:
                lines.append("%s: %s" % (n, v))
        lines += ["%s: %s" % h for h in extra]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append("Content-Length: %d" % len(body))
        data = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
        self.client.sock.sendto(data, self.client.server)

    def _loop(self):
        self.tag = secrets.token_hex(4)
        contact = "<sip:%s@%s:%d>" % ((self.client.user,) + self.client.local)
        while not self._stop.is_set():
            try:
                msg = self.client.recv(0.2)
            except OSError:
                return
            if msg is None or msg.method is None:
                continue
            with self.lock:
                self.seen.append((msg.method, msg.get("From") or "", msg))
            if msg.method == "INVITE":
                self._reply(msg, 180, "Ringing", extra=[("Contact", contact)])
                body = (SDP % self.rtp.getsockname()[1]).encode()
                self._reply(msg, 200, "OK", body=body, extra=[("Contact", contact)])
            elif msg.method in ("BYE", "OPTIONS", "CANCEL", "MESSAGE", "INFO", "UPDATE"):
                self._reply(msg, 200, "OK")


# --------------------------------------------------------------------------------------
# OpenSIPS with examples/opensips.cfg
# --------------------------------------------------------------------------------------

class Example(LogFile):
    """OpenSIPS running examples/opensips.cfg (rendered for this machine)."""

    def __init__(self, binary, modules_dir, module, workdir, sso, name="opensips",
                 variant=None):
        self.binary = binary
        self.workdir = Path(workdir)
        mods = self.workdir / "modules"
        if not mods.exists():
            mods.mkdir()
            for so in Path(modules_dir).glob("*.so"):
                (mods / so.name).symlink_to(so)
            shutil.copy2(module, mods / "sso_auth.so")
        self.port = free_udp_port()
        self.ws_port = free_tcp_port()
        self.cfg = self.workdir / ("%s.cfg" % name)
        text = render_example_cfg(mods, self.port, self.ws_port, sso.url)
        self.cfg.write_text(variant(text) if variant else text)
        self.logpath = self.workdir / ("%s.log" % name)
        self.proc = None

    def start(self):
        self._log = open(self.logpath, "ab")
        self.proc = subprocess.Popen(
            [self.binary, "-F", "-f", str(self.cfg), "-m", "64", "-M", "8",
             "-w", str(self.workdir)],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise Fail("OpenSIPS exited at start-up:\n" + self.log_tail(30))
            if self.answers():
                return self
            time.sleep(0.1)
        raise Fail("OpenSIPS did not answer within 20 s:\n" + self.log_tail(30))

    def answers(self, timeout=0.5):
        """Any final answer to an OPTIONS (the example challenges it: 407)."""
        try:
            with SipClient(self.port, user="ping", domain=DOMAIN) as c:
                req = c.build("OPTIONS", uri="sip:%s" % DOMAIN, to_uri="sip:%s" % DOMAIN)
                c.send(req)
                c.wait_final(req, timeout)
                return True
        except (SipError, OSError):
            return False

    def alive(self, what):
        check(self.proc.poll() is None, "OpenSIPS exited during %s" % what)
        check(self.answers(2.0), "OpenSIPS no longer answers after %s" % what)

    def stop(self):
        if self.proc is not None:
            stop_process_group(self.proc, term_wait=8)
            self._log.close()
            self.proc = None



def challenge_variant(text):
    """The example with its challenges changed to qop="auth,auth-int" and nonces living 3 s:
    the other challenge forms the module sends (both qops, stale=true), tried on the phones."""
    for fn in ("sso_challenge", "sso_proxy_challenge"):
        old = '%s("", "auth", "$var(algorithms)")' % fn
        check(old in text, "examples/opensips.cfg no longer calls %s" % old)
        text = text.replace(old, '%s("", "auth,auth-int", "$var(algorithms)")' % fn)
    text, n = re.subn(r'^(modparam\("sso_auth", "secret", .*)$',
                      r'\1\nmodparam("sso_auth", "nonce_expire", 3)', text, flags=re.M)
    check(n == 1, "examples/opensips.cfg sets no secret")
    return text


class Ctx:
    def __init__(self, example, sso, workdir, make_example=None):
        self.os = example
        self.sso = sso
        self.workdir = Path(workdir)
        self.callee = None
        self._make = make_example
        self._variant = None

    def variant(self):
        """The second OpenSIPS (challenge_variant), started on first use."""
        if self._variant is None:
            self._variant = self._make("variant", challenge_variant).start()
        return self._variant

    def stop_variant(self):
        if self._variant is not None:
            self._variant.stop()

    def logins(self, since, user=None, method=None):
        """The Digest logins (/token requests) the SSO got since `since` (a sso.log index)."""
        out = []
        for endpoint, form, _headers in self.sso_log()[since:]:
            if endpoint != "token":
                continue
            if user and form.get("username") != user:
                continue
            if method and form.get("method") != method:
                continue
            out.append(form)
        return out

    def sso_log(self):
        with self.sso._lock:
            return list(self.sso.requests)

    def mark(self):
        return len(self.sso_log())

    def registered(self, user):
        """Whether `user` has a binding: carol (token) sends a MESSAGE to it; 404 = none."""
        tok = self.sso.issue_token("carol")
        with SipClient(self.os.port, user="carol", domain=DOMAIN) as c:
            _q, r = c.request("MESSAGE", to_uri="sip:%s@%s" % (user, DOMAIN),
                              headers=[("X-SSO-Token", tok)], body=b"are you there?")
        return r.status != 404, r.status


# --------------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------------

CASES = []


def case(name):
    def deco(fn):
        CASES.append((name, fn))
        return fn
    return deco


def need(tool, package):
    path = shutil.which(tool)
    if not path:
        raise Skip("%s not found: install the Debian package %s" % (tool, package))
    return path


def wait_for(cond, timeout, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return cond()


def check_call(ctx, mark, caller, hung_up=True):
    """bob got the caller's INVITE (relayed after the 407 and Digest), the ACK and the BYE;
    the relayed INVITE carried no credentials."""
    methods = ctx.callee.methods(mark)
    check("INVITE" in methods, "bob never got an INVITE from %s (bob saw %s)" % (caller, methods))
    with ctx.callee.lock:
        invite = [x for m, _f, x in ctx.callee.seen[mark:] if m == "INVITE"][0]
    check(caller in (invite.get("From") or ""), "INVITE to bob is not from %s: %r"
          % (caller, invite.get("From")))
    for h in ("Proxy-Authorization", "Authorization", "X-SSO-Token"):
        check(not invite.has(h), "the INVITE relayed to bob still carries %s" % h)
    check("ACK" in methods, "bob got no ACK for its 200 OK (bob saw %s)" % methods)
    if hung_up:
        check("BYE" in methods, "bob got no BYE (bob saw %s)" % methods)


def check_logins(ctx, mark, user, methods):
    """The SSO verified Digest responses of `user` for at least these methods (the REGISTER
    and the INVITE may race), the last one being the un-REGISTER, each with a response and
    the module's nonce."""
    got = ctx.logins(mark, user=user)
    seq = [f.get("method") for f in got]
    for m in set(methods):
        check(seq.count(m) >= methods.count(m), "SSO Digest logins of %s: expected %s, got %s"
              % (user, methods, seq))
    check(seq and seq[-1] == methods[-1], "SSO Digest logins of %s: the last should be %s, got %s"
          % (user, methods[-1], seq))
    for f in got:
        check(f.get("response") and len(f.get("nonce") or "") >= 64,
              "a Digest login without a response or with a foreign nonce: %r" % f)
    return got


def check_unregistered(ctx, user, domain=DOMAIN):
    present, status = ctx.registered(user)
    check(not present, "%s is still registered after unregistering (MESSAGE to it: %d)"
          % (user, status))


def free_sip_port():
    """A port baresip can take for UDP, TCP and TLS (the next port): chosen below the
    kernel's ephemeral range, so no outgoing connection (OpenSIPS's keep-alive connections
    to the SSO, say) can hold it meanwhile, and checked free for all three."""
    import random
    for _ in range(200):
        port = random.randrange(20000, 32000, 2)
        socks = []
        try:
            for kind, p in ((socket.SOCK_DGRAM, port), (socket.SOCK_STREAM, port),
                            (socket.SOCK_STREAM, port + 1)):
                s = socket.socket(socket.AF_INET, kind)
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return port
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port for baresip between 20000 and 32000")


def write_baresip(d, proxy_port):
    """baresip's config directory: one account (alice, outbound proxy = OpenSIPS), no sound
    card (a sine source, audio written to /dev/null)."""
    d.mkdir(exist_ok=True)
    (d / "accounts").write_text(
        '<sip:alice@%s>;auth_pass=alicepw;outbound="sip:127.0.0.1:%d";regint=600\n'
        % (DOMAIN, proxy_port))
    (d / "config").write_text("\n".join([
        "sip_listen 127.0.0.1:%d" % free_sip_port(),
        "module_path /usr/lib/baresip/modules",
        "module g711.so", "module ausine.so", "module aufile.so",
        "module_app account.so", "module_app menu.so",
        "audio_source ausine,440", "audio_player aufile,/dev/null",
        "audio_alert aufile,/dev/null", ""]))


def linphonerc(proxy_port):
    """linphonec's configuration: alice with OpenSIPS as outbound proxy (the account's route);
    the realm is the domain of the identity. Without the two register_only_* keys set to 0
    the account never registered here."""
    return "\n".join([
        "[sip]", "sip_port=%d" % free_udp_port(), "sip_tcp_port=0", "sip_tls_port=0",
        "default_proxy=0", "register_only_when_network_is_up=0",
        "register_only_when_upnp_is_ok=0",
        "[video]", "enabled=0",
        "[auth_info_0]", "username=alice", "passwd=alicepw", "realm=%s" % DOMAIN,
        "[proxy_0]", "reg_proxy=sip:127.0.0.1:%d" % proxy_port,
        "reg_route=sip:127.0.0.1:%d;lr" % proxy_port,
        "reg_identity=sip:alice@%s" % DOMAIN, "reg_expires=600", "reg_sendregister=1", ""])


@case("baresip_register_call_unregister")
def t_baresip(ctx):
    exe = need("baresip", "baresip-core")
    d = ctx.workdir / "baresip"
    write_baresip(d, ctx.os.port)
    mark, cmark = ctx.mark(), ctx.callee.mark()
    # -t: quit after that many seconds, hanging up and unregistering on the way out.
    out = subprocess.run([exe, "-f", str(d), "-t", "5", "-e", "/dial sip:bob@%s" % DOMAIN],
                         capture_output=True, text=True, timeout=30)
    text = out.stdout + out.stderr
    check(re.search(r"alice@%s: .*200 OK" % re.escape(DOMAIN), text),
          "baresip did not report its registration (output: %s)" % text[-1500:])
    check_call(ctx, cmark, "sip:alice@")
    check_logins(ctx, mark, "alice", ["REGISTER", "INVITE", "REGISTER"])
    check_unregistered(ctx, "alice")


class Pty:
    """A program on a pseudo-terminal (linphonec reads commands only from a tty)."""

    def __init__(self, argv, env):
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env,
                                     close_fds=True, start_new_session=True)
        os.close(slave)
        self.out = b""

    def send(self, line):
        os.write(self.master, (line + "\n").encode())

    def expect(self, pattern, timeout):
        """Waits until the output (since the start) matches `pattern`."""
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern.encode())
        while not rx.search(self.out):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            r, _w, _x = select.select([self.master], [], [], min(left, 0.1))
            if r:
                try:
                    self.out += os.read(self.master, 65536)
                except OSError:
                    return bool(rx.search(self.out))
        return True

    def text(self):
        return self.out.decode("utf-8", "replace")

    def close(self):
        stop_process_group(self.proc, term_wait=3)
        try:
            os.close(self.master)
        except OSError:
            pass


@case("linphonec_register_call_unregister")
def t_linphone(ctx):
    exe = need("linphonec", "linphone-cli")
    home = ctx.workdir / "linphone-home"
    # Without this directory linphonec silently opens no SIP port.
    (home / ".local/share/linphone").mkdir(parents=True, exist_ok=True)
    rc = home / "linphonerc"
    rc.write_text(linphonerc(ctx.os.port))
    env = dict(os.environ, HOME=str(home))
    mark, cmark = ctx.mark(), ctx.callee.mark()
    p = Pty([exe, "-c", str(rc), "-d", "0"], env)
    try:
        check(p.expect(r"linphonec> ", 15), "linphonec did not start: %s" % p.text()[-1500:])
        check(wait_for(lambda: ctx.logins(mark, "alice", "REGISTER"), 8),
              "linphonec's REGISTER never reached the SSO: %s" % p.text()[-1500:])
        present, status = ctx.registered("alice")
        check(present and status == 200,
              "alice (linphonec) not reachable after registering: MESSAGE got %d" % status)
        p.send("call sip:bob@%s" % DOMAIN)
        check(p.expect(r"Call \d+ with sip:bob@%s connected" % re.escape(DOMAIN), 10),
              "linphonec's call did not connect: %s" % p.text()[-1500:])
        p.send("terminate")
        check(p.expect(r"Call \d+ with sip:bob@\S+ ended", 8),
              "linphonec's call did not end: %s" % p.text()[-1500:])
        n = len(ctx.logins(mark, "alice", "REGISTER"))
        p.send("unregister")
        check(wait_for(lambda: len(ctx.logins(mark, "alice", "REGISTER")) > n, 8),
              "linphonec's un-REGISTER never reached the SSO: %s" % p.text()[-1500:])
        time.sleep(0.3)
        p.send("quit")
        p.proc.wait(10)
    finally:
        p.close()
    check_call(ctx, cmark, "sip:alice@")
    got = check_logins(ctx, mark, "alice", ["REGISTER", "INVITE", "REGISTER"])
    check_unregistered(ctx, "alice")
    algs = sorted({(f.get("algorithm") or "MD5") for f in got})
    note("linphonec answered with %s" % ", ".join(algs))


@case("sipsak_register_invite_unregister")
def t_sipsak(ctx):
    exe = need("sipsak", "sipsak")
    # sipsak resolves the URI's host even with an outbound proxy (-p): use one that resolves.
    domain = "localhost"
    port = free_udp_port()
    base = [exe, "-s", "sip:alice@%s" % domain, "-p", "127.0.0.1:%d" % ctx.os.port,
            "-l", str(port), "-u", "alice", "-a", "alicepw"]
    mark, cmark = ctx.mark(), ctx.callee.mark()
    r = subprocess.run(base + ["-U", "-x", "600", "-vv"], capture_output=True, text=True,
                       timeout=30)
    check(r.returncode == 0 and "tests completed successful" in r.stdout,
          "sipsak REGISTER failed (rc %d): %s" % (r.returncode, (r.stdout + r.stderr)[-1500:]))
    # sipsak's own call mode (-I) crashes (0.9.8.1); it sends an INVITE file instead, and
    # answers the 407 with Digest as for any request.
    sdp = ("v=0\r\no=alice 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
           "m=audio 9 RTP/AVP 0\r\n")
    inv = ("INVITE sip:bob@%s SIP/2.0\r\nFrom: <sip:alice@%s>;tag=sipsak%s\r\n"
           "To: <sip:bob@%s>\r\nCall-ID: %s@127.0.0.1\r\nCSeq: 1 INVITE\r\n"
           "Contact: <sip:alice@127.0.0.1:%d>\r\nMax-Forwards: 70\r\n"
           "User-Agent: sipsak 0.9.8.1\r\nContent-Type: application/sdp\r\n"
           "Content-Length: %d\r\n\r\n%s"
           % (DOMAIN, domain, secrets.token_hex(3), DOMAIN, secrets.token_hex(8), port,
              len(sdp), sdp))
    f = ctx.workdir / "sipsak-invite.sip"
    f.write_text(inv)
    r = subprocess.run([exe, "-f", str(f), "-s", "sip:bob@%s" % domain, "-p",
                        "127.0.0.1:%d" % ctx.os.port, "-l", str(port), "-u", "alice",
                        "-a", "alicepw", "-vv"], capture_output=True, text=True, timeout=30)
    check("SIP/2.0 200 OK" in r.stdout,
          "sipsak's INVITE got no 200 OK: %s" % (r.stdout + r.stderr)[-1500:])
    methods = ctx.callee.methods(cmark)
    check("INVITE" in methods, "bob never got sipsak's INVITE (bob saw %s)" % methods)
    r = subprocess.run(base + ["-U", "-x", "0", "-vv"], capture_output=True, text=True,
                       timeout=30)
    check(r.returncode == 0 and "tests completed successful" in r.stdout,
          "sipsak un-REGISTER failed (rc %d): %s" % (r.returncode, (r.stdout + r.stderr)[-1500:]))
    check_logins(ctx, mark, "alice", ["REGISTER", "INVITE", "REGISTER"])
    check_unregistered(ctx, "alice")


@case("pjsua2_register_call_unregister_token")
def t_pjsua2(ctx):
    probe = subprocess.run([sys.executable, "-c", "import pjsua2"], capture_output=True,
                           text=True, timeout=30)
    if probe.returncode != 0:
        raise Skip("PJSUA2 not importable: pip install pjsua2-python (%s)"
                   % probe.stderr.strip().splitlines()[-1:])
    mark, cmark = ctx.mark(), ctx.callee.mark()
    n_intro = ctx.sso.count("introspect")
    r = subprocess.run([sys.executable, str(HERE / "pjsua2_ua.py"), "--proxy",
                        "127.0.0.1:%d" % ctx.os.port, "--user", "alice", "--password",
                        "alicepw", "--domain", DOMAIN, "--callee", "sip:bob@%s" % DOMAIN],
                       capture_output=True, text=True, timeout=90)
    steps = {}
    for line in r.stdout.splitlines():
        if line.startswith("{"):
            s = json.loads(line)
            steps[s["step"]] = s
    for step in ("register", "call", "hangup", "unregister", "register_token",
                 "unregister_token"):
        check(steps.get(step, {}).get("ok"), "PJSUA2 step %s failed: %s\n%s"
              % (step, steps.get(step), (r.stdout + r.stderr)[-1500:]))
    check(r.returncode == 0, "PJSUA2 exited with %d" % r.returncode)
    check_call(ctx, cmark, "sip:alice@")
    check_logins(ctx, mark, "alice", ["REGISTER", "INVITE", "REGISTER"])
    # The two token REGISTERs need no Digest login, and the token they carried is the one the
    # first 200 OK handed over (the SSO introspected exactly that token).
    eq(len(ctx.logins(mark, "alice")), 3, "Digest logins of alice (the token REGISTERs need none)")
    want = steps["register_token"].get("token_sha256")
    seen = [hashlib.sha256(form.get("token", "").encode()).hexdigest()
            for endpoint, form, _h in ctx.sso_log()[mark:] if endpoint == "introspect"]
    check(want in seen, "the SSO never introspected the token PJSUA2 sent")
    check(ctx.sso.count("introspect") > n_intro, "no introspection at all")
    check_unregistered(ctx, "alice")


@case("retransmissions_absorbed_slow_sso")
def t_retransmissions(ctx):
    """A lossy network and an SSO slower than T1: the Digest REGISTER is sent again at 0.5 s
    and 1 s while the SSO takes 1.5 s. tm (t_newtran in the example) absorbs the copies:
    one 200 OK with the token, no 401 in between, one SSO login. A copy sent after the
    answer gets the same 200 and token from tm; one sent after tm's transaction is gone
    (6 s) gets them from the module. The same credentials in a new request are refused and
    challenged with stale=true."""
    sso = ctx.sso
    mark = ctx.mark()
    with SipClient(ctx.os.port, user="carol", domain=DOMAIN) as c:
        _q, r = c.request("REGISTER", expires=600)
        eq(r.status, 401, "REGISTER without credentials")
        ch = r.digest_challenges()[0]
        value, _ = digest_credentials(ch, "REGISTER", "sip:%s" % DOMAIN, "carol", "carolpw")
        req = c.build("REGISTER", headers=[("Authorization", value)], expires=600)
        sso.delay = 1.5
        try:
            c.send(req)
            time.sleep(0.5)
            c.send(req)
            time.sleep(0.5)
            c.send(req)     # (well before the answer at 1.5 s: tm would resend that)
            first = c.wait_final(req, 5.0)
        finally:
            sso.delay = 0
        eq(first.status, 200, "answer to the slow Digest REGISTER")
        tok = first.get("X-SSO-Token")
        check(tok, "200 OK without X-SSO-Token")
        stray = c.recv(0.5)
        check(stray is None, "a second answer to copies absorbed by tm: %s"
              % (stray.status if stray else None))
        c.send(req)
        again = c.wait_final(req, 2.0)
        eq((again.status, again.get("X-SSO-Token")), (200, tok), "copy after the answer (tm)")
        time.sleep(6.0)
        c.send(req)
        late = c.wait_final(req, 3.0)
        eq((late.status, late.get("X-SSO-Token")), (200, tok),
           "copy 6 s later, tm's transaction gone (the module's retransmission table)")
        _q, replay = c.request("REGISTER", headers=[("Authorization", value)], expires=600)
        eq(replay.status, 401, "same credentials in a new request")
        new = replay.digest_challenges()
        check(new and (new[0].get("stale") or "").lower() == "true",
              "challenge after a reused nonce without stale=true")
        # re-signed with the fresh nonce, without asking anybody: accepted
        value2, _ = digest_credentials(new[0], "REGISTER", "sip:%s" % DOMAIN, "carol",
                                       "carolpw")
        _q, ok = c.request("REGISTER", headers=[("Authorization", value2)], expires=0)
        eq(ok.status, 200, "re-signed request after stale=true")
    logins = ctx.logins(mark, user="carol")
    eq(len(logins), 2, "SSO Digest logins (one per request, none for the copies)")


def check_variant_logins(ctx, inst, mark, since, user, phone, reuses_nonce):
    """On the variant: the phone answered a qop="auth,auth-int" challenge and unregistered
    after its nonce had gone stale. A phone that signs the un-REGISTER with its cached nonce
    (`reuses_nonce`) gets -3 and stale=true, and must sign again by itself; the others start
    with a fresh challenge."""
    got = ctx.logins(mark, user=user, method="REGISTER")
    check(len(got) >= 2, "%s: SSO Digest REGISTER logins %d, expected 2 (register and "
          "un-REGISTER)" % (phone, len(got)))
    qops = sorted({f.get("qop") or "none" for f in got})
    stale = "nonce expired -> -3" in inst.log_text(since)
    if reuses_nonce:
        check(stale, "%s: its un-REGISTER never hit a stale nonce" % phone)
    check_unregistered_on(ctx, inst, user)
    note("%s chose qop %s from qop=\"auth,auth-int\"; %s"
         % (phone, "/".join(qops), "re-signed after stale=true" if stale else
            "un-REGISTER signed a fresh challenge (no stale nonce reused)"))


def check_unregistered_on(ctx, inst, user):
    tok = ctx.sso.issue_token("carol")
    with SipClient(inst.port, user="carol", domain=DOMAIN) as c:
        _q, r = c.request("MESSAGE", to_uri="sip:%s@%s" % (user, DOMAIN),
                          headers=[("X-SSO-Token", tok)], body=b"still there?")
    check(r.status == 404, "%s still registered (MESSAGE got %d)" % (user, r.status))


@case("challenge_forms_pjsua2")
def t_forms_pjsua2(ctx):
    probe = subprocess.run([sys.executable, "-c", "import pjsua2"], capture_output=True,
                           timeout=30)
    if probe.returncode != 0:
        raise Skip("PJSUA2 not importable: pip install pjsua2-python")
    inst = ctx.variant()
    mark, since = ctx.mark(), inst.log_size()
    r = subprocess.run([sys.executable, str(HERE / "pjsua2_ua.py"), "--proxy",
                        "127.0.0.1:%d" % inst.port, "--user", "alice", "--password", "alicepw",
                        "--domain", DOMAIN, "--callee", "-", "--register-only", "4"],
                       capture_output=True, text=True, timeout=60)
    check(r.returncode == 0, "PJSUA2 on the variant: %s" % (r.stdout + r.stderr)[-1500:])
    check_variant_logins(ctx, inst, mark, since, "alice", "PJSUA2", False)
    inst.alive("challenge_forms_pjsua2")


@case("challenge_forms_linphonec")
def t_forms_linphone(ctx):
    exe = need("linphonec", "linphone-cli")
    inst = ctx.variant()
    home = ctx.workdir / "linphone-home-variant"
    (home / ".local/share/linphone").mkdir(parents=True, exist_ok=True)
    rc = home / "linphonerc"
    rc.write_text(linphonerc(inst.port))
    mark, since = ctx.mark(), inst.log_size()
    p = Pty([exe, "-c", str(rc), "-d", "0"], dict(os.environ, HOME=str(home)))
    try:
        check(wait_for(lambda: ctx.logins(mark, "alice", "REGISTER"), 10),
              "linphonec's REGISTER never reached the SSO: %s" % p.text()[-1500:])
        time.sleep(4)
        p.send("unregister")
        check(wait_for(lambda: len(ctx.logins(mark, "alice", "REGISTER")) >= 2, 8),
              "linphonec's un-REGISTER never reached the SSO: %s" % p.text()[-1500:])
        time.sleep(0.3)
        p.send("quit")
        p.proc.wait(10)
    finally:
        p.close()
    check_variant_logins(ctx, inst, mark, since, "alice", "linphonec", True)
    inst.alive("challenge_forms_linphonec")


@case("challenge_forms_baresip")
def t_forms_baresip(ctx):
    exe = need("baresip", "baresip-core")
    inst = ctx.variant()
    d = ctx.workdir / "baresip-variant"
    write_baresip(d, inst.port)
    mark, since = ctx.mark(), inst.log_size()
    out = subprocess.run([exe, "-f", str(d), "-t", "5"], capture_output=True, text=True,
                         timeout=30)
    check(re.search(r"alice@%s: .*200 OK" % re.escape(DOMAIN), out.stdout + out.stderr),
          "baresip did not register on the variant: %s" % (out.stdout + out.stderr)[-1500:])
    check_variant_logins(ctx, inst, mark, since, "alice", "baresip", False)
    inst.alive("challenge_forms_baresip")


@case("challenge_forms_sipsak")
def t_forms_sipsak(ctx):
    exe = need("sipsak", "sipsak")
    inst = ctx.variant()
    base = [exe, "-s", "sip:alice@localhost", "-p", "127.0.0.1:%d" % inst.port,
            "-l", str(free_udp_port()), "-u", "alice", "-a", "alicepw", "-vv", "-U"]
    mark, since = ctx.mark(), inst.log_size()
    for expires in ("600", "0"):
        r = subprocess.run(base + ["-x", expires], capture_output=True, text=True, timeout=30)
        check(r.returncode == 0 and "tests completed successful" in r.stdout,
              "sipsak -x %s on the variant: %s" % (expires, (r.stdout + r.stderr)[-1500:]))
    check_variant_logins(ctx, inst, mark, since, "alice", "sipsak", False)
    inst.alive("challenge_forms_sipsak")


def ws_client(ctx, user):
    from ws_sip import WsSipClient, WsError
    try:
        return WsSipClient(ctx.os.ws_port, user=user, domain=DOMAIN)
    except (WsError, OSError) as e:
        raise Fail("WebSocket connection to proto_ws (port %d): %s" % (ctx.os.ws_port, e))


@case("ws_digest_login_token_in_200")
def t_ws_digest(ctx):
    """A WebSocket client without a token: 401 with Digest only (default bearer_challenge),
    Digest login, the new token in the 200 OK."""
    mark = ctx.mark()
    c = ws_client(ctx, "alice")
    try:
        _q, r = c.request("REGISTER", expires=600)
        eq(r.status, 401, "REGISTER over WebSocket without credentials")
        check(r.digest_challenges(), "401 without a Digest challenge")
        check(not r.bearer_challenges(),
              "Bearer offered to a request without a token (bearer_challenge=when_token)")
        value, info = digest_credentials(r.digest_challenges()[0], "REGISTER",
                                         "sip:%s" % DOMAIN, "alice", "alicepw")
        _q, r = c.request("REGISTER", headers=[("Authorization", value)], expires=0)
        eq(r.status, 200, "Digest REGISTER over WebSocket")
        tok = r.get("X-SSO-Token")
        check(tok, "200 OK over WebSocket without X-SSO-Token")
    finally:
        c.close()
    logins = ctx.logins(mark, user="alice", method="REGISTER")
    eq(len(logins), 1, "SSO Digest logins")
    eq(logins[0].get("response"), info["response"], "Digest response the SSO verified")
    check(tok in ctx.sso.tokens and ctx.sso.tokens[tok]["username"] == "alice",
          "the token in the 200 OK is not the one the SSO issued for alice")


@case("ws_bearer_token_accepted")
def t_ws_bearer(ctx):
    """A WebRTC-style client: Authorization: Bearer on REGISTER, Proxy-Authorization: Bearer
    on a MESSAGE to bob (relayed to bob without the credentials)."""
    tok = ctx.sso.issue_token("alice")
    mark, cmark = ctx.mark(), ctx.callee.mark()
    c = ws_client(ctx, "alice")
    try:
        _q, r = c.request("REGISTER", headers=[("Authorization", "Bearer " + tok)], expires=0)
        eq(r.status, 200, "REGISTER over WebSocket with a Bearer token")
        check(not r.has("X-SSO-Token"), "a token-authorized REGISTER got a new token")
        _q, r = c.request("MESSAGE", to_uri="sip:bob@%s" % DOMAIN, body=b"hello bob",
                          headers=[("Proxy-Authorization", "Bearer " + tok)])
        eq(r.status, 200, "MESSAGE over WebSocket with a Bearer token, relayed to bob")
    finally:
        c.close()
    intro = [f for e, f, _h in ctx.sso_log()[mark:] if e == "introspect"]
    check(intro and all(f.get("token") == tok for f in intro),
          "the SSO did not introspect exactly the Bearer token (%d introspections)" % len(intro))
    eq(len(ctx.logins(mark)), 0, "SSO Digest logins for token requests")
    check(wait_for(lambda: "MESSAGE" in ctx.callee.methods(cmark), 2), "bob got no MESSAGE")
    with ctx.callee.lock:
        msg = [x for m, _f, x in ctx.callee.seen[cmark:] if m == "MESSAGE"][0]
    check(not msg.has("Proxy-Authorization"), "the MESSAGE relayed to bob carries the token")


@case("ws_bad_bearer_401_bearer_challenge")
def t_ws_bad_bearer(ctx):
    """An expired or unknown Bearer token over WebSocket: 401 with the Bearer challenge
    (error="invalid_token", authz_server) next to the Digest ones."""
    mark = ctx.mark()
    c = ws_client(ctx, "alice")
    try:
        _q, r = c.request("REGISTER", headers=[("Authorization", "Bearer not-a-real-token")],
                          expires=600)
        eq(r.status, 401, "REGISTER over WebSocket with a bad Bearer token")
        b = r.bearer_challenges()
        check(b, "no Bearer challenge for a request that carried a token")
        eq(b[0].get("error"), "invalid_token", "Bearer error")
        eq(b[0].get("realm"), DOMAIN, "Bearer realm")
        eq(b[0].get("authz_server"), "https://sso.example.com/", "Bearer authz_server")
        check(r.digest_challenges(), "no Digest challenge next to the Bearer one")
        tok = ctx.sso.issue_token("alice", lifetime=-10)
        _q, r = c.request("REGISTER", headers=[("Authorization", "Bearer " + tok)], expires=600)
        eq(r.status, 401, "REGISTER over WebSocket with an expired Bearer token")
        eq((r.bearer_challenges() or [None])[0] and r.bearer_challenges()[0].get("error"),
           "invalid_token", "Bearer error for an expired token")
    finally:
        c.close()
    intro = [f.get("token") for e, f, _h in ctx.sso_log()[mark:] if e == "introspect"]
    check("not-a-real-token" in intro, "the SSO was not asked about the bad token")


# --------------------------------------------------------------------------------------
# Runner
# --------------------------------------------------------------------------------------

def summary(p, f, s):
    print("phones: %d passed, %d failed, %d skipped" % (p, f, s), flush=True)


def crashes(text):
    return [ln for ln in text.splitlines() if any(re.search(p, ln) for p in CRASH_PATTERNS)]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-k", dest="filter", action="append", default=[],
                    help="only cases whose name contains this (repeatable)")
    ap.add_argument("--list", action="store_true")
    args = ap.parse_args(argv)
    if args.list:
        for name, _fn in CASES:
            print(name)
        return 0
    cases = [c for c in CASES if not args.filter or any(k in c[0] for k in args.filter)]
    binary = find_opensips()
    if binary is None:
        print("=" * 72)
        print("PHONES SKIPPED: no OpenSIPS found (set OPENSIPS=/path/to/sbin/opensips)")
        print("=" * 72)
        summary(0, 0, len(cases))
        return 0
    module = os.environ.get("SSO_AUTH_MODULE") or str(REPO / "target/release/libsso_auth.so")
    mdir = find_modules_dir(binary)
    if not os.path.isfile(module) or not mdir:
        print("PHONES ERROR: %s" % ("no module at %s" % module if mdir else
                                    "stock modules not found (set OPENSIPS_MODULES_DIR)"))
        summary(0, len(cases), 0)
        return 1
    version = subprocess.run([binary, "-V"], capture_output=True, text=True).stdout
    print("OpenSIPS: %s (%s)" % (binary, version.splitlines()[0] if version else "?"))
    print("config:   examples/opensips.cfg (rendered: mpath, sockets, SSO URLs, stderr logging)")
    t_start = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="sso-phones-"))
    sso = SsoServer().start()
    example = Example(binary, mdir, module, work, sso)
    passed = failed = skipped = 0
    ctx = Ctx(example, sso, work, lambda name, variant: Example(
        binary, mdir, module, work, sso, name=name, variant=variant))
    try:
        try:
            example.start()
            ctx.callee = Callee(example.port).start()
        except Exception as e:  # noqa: BLE001
            print("FAIL startup: %s" % e)
            summary(0, len(cases), 0)
            return 1
        for name, fn in cases:
            t0 = time.monotonic()
            since = example.log_size()
            try:
                fn(ctx)
                example.alive(name)
                bad = crashes(example.log_text(since))
                check(not bad, "crash in the OpenSIPS log: %s" % bad[:3])
                passed += 1
                print("PASS %s (%.1f s)" % (name, time.monotonic() - t0), flush=True)
            except Skip as e:
                skipped += 1
                print("SKIP %s: %s" % (name, e), flush=True)
                print("=" * 72 + "\n  SKIPPED %s: %s\n" % (name, e) + "=" * 72, flush=True)
            except (Fail, SipError, subprocess.TimeoutExpired) as e:
                failed += 1
                print("FAIL %s: %s" % (name, e), flush=True)
                tail = example.log_tail(25, since)
                if tail.strip():
                    print("\n".join("    | " + ln for ln in tail.splitlines()))
            except Exception as e:  # noqa: BLE001 - a harness bug is a failure too
                failed += 1
                print("FAIL %s: harness error %s: %s" % (name, type(e).__name__, e), flush=True)
                traceback.print_exc()
    finally:
        if ctx.callee:
            ctx.callee.stop()
        ctx.stop_variant()
        example.stop()
        sso.stop()
    return finish_suite(work, "config, OpenSIPS log", t_start, summary, passed, failed, skipped)


if __name__ == "__main__":
    sys.exit(main())
