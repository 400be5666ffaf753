#!/usr/bin/env python3
"""End-to-end tests of the sso_auth OpenSIPS module.

    python3 tests/e2e/run.py              # everything
    python3 tests/e2e/run.py -k fault     # only cases whose name contains "fault"
    python3 tests/e2e/run.py --list       # case names
    python3 tests/e2e/run.py --selftest   # harness only: Digest vectors, SSO server,
                                          # OpenSIPS start/stop without sso_auth

Environment:
    OPENSIPS               path to sbin/opensips (else `opensips` on PATH; none -> SKIPPED)
    OPENSIPS_MODULES_DIR   stock modules dir (else derived from the binary's prefix)
    SSO_AUTH_MODULE        the module .so (else target/release/libsso_auth.so)
    E2E_LOG_LEVEL          OpenSIPS log_level (default 3; 4 = debug)
    E2E_KEEP               1 = keep the temporary directory (configs and logs)

The last line printed is always `e2e: N passed, N failed, N skipped`; exit status 1 when
anything failed. Python 3.11 standard library only.
"""

import argparse
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))

from sip import (SipClient, SipError, SipUas, digest_credentials,  # noqa: E402
                 parse_auth_params, random_token)
from sso_server import (DIGEST_GRANT, SsoServer, digest_hash,  # noqa: E402
                        digest_response, _sha512_256_fallback)

HTTP_TIMEOUT_MS = 1000
AUTHZ_SERVER = "https://sso.example.com/"
DOMAIN = "example.com"
ALL_ALGORITHMS = ["MD5", "MD5-sess", "SHA-256", "SHA-256-sess", "SHA-512-256",
                  "SHA-512-256-sess"]
CRASH_PATTERNS = [r"segfault", r"core dump", r"core was generated",
                  r"child process .* exited by a signal", r"exited by a signal",
                  r"panicked at"]


class Fail(Exception):
    pass


class Skip(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Fail(what)


def eq(got, want, what):
    if got != want:
        raise Fail("%s: expected %r, got %r" % (what, want, got))


# --------------------------------------------------------------------------------------
# OpenSIPS discovery and process management
# --------------------------------------------------------------------------------------

def find_opensips():
    env = os.environ.get("OPENSIPS")
    if env:
        return env if os.path.isfile(env) and os.access(env, os.X_OK) else None
    return shutil.which("opensips")


def find_modules_dir(binary):
    env = os.environ.get("OPENSIPS_MODULES_DIR")
    if env:
        return env
    real = Path(os.path.realpath(binary))
    prefix = real.parent.parent
    cands = [prefix / "lib64/opensips/modules", prefix / "lib/opensips/modules"]
    cands += sorted(prefix.glob("lib/*-linux-gnu*/opensips/modules"))
    cands += [Path("/usr/lib/x86_64-linux-gnu/opensips/modules"),
              Path("/usr/lib64/opensips/modules"), Path("/usr/lib/opensips/modules"),
              Path("/usr/local/lib64/opensips/modules"), Path("/usr/local/lib/opensips/modules")]
    for c in cands:
        if (c / "sl.so").exists():
            return str(c)
    return None


def free_udp_port():
    import socket
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def options_ping(port, timeout=0.3):
    try:
        with SipClient(port) as c:
            req = c.build("OPTIONS", uri="sip:127.0.0.1:%d" % port, to_uri="sip:ping@" + DOMAIN)
            c.send(req)
            r = c.wait_final(req, timeout)
            return r.status == 200
    except (SipError, OSError):
        return False


class OpenSips:
    def __init__(self, name, binary, workdir, cfg_text):
        self.name = name
        self.binary = binary
        self.workdir = Path(workdir)
        self.cfg = self.workdir / ("%s.cfg" % name)
        self.logpath = self.workdir / ("%s.log" % name)
        self.cfg.write_text(cfg_text)
        self.proc = None
        self.port = None
        self._logf = None

    def start(self, port):
        self.port = port
        self._logf = open(self.logpath, "ab")
        cmd = [self.binary, "-F", "-f", str(self.cfg), "-m", "64", "-M", "8",
               "-w", str(self.workdir)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._logf,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout=20.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise Fail("OpenSIPS '%s' exited with status %s during startup"
                           % (self.name, self.proc.returncode))
            if options_ping(self.port):
                return
            time.sleep(0.1)
        raise Fail("OpenSIPS '%s' did not answer OPTIONS within %.0fs" % (self.name, timeout))

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(timeout=8)
            except subprocess.TimeoutExpired:
                pass
        # whatever is left of the process group we started (workers, timers)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        if self._logf:
            self._logf.close()
            self._logf = None

    def log_size(self):
        try:
            return self.logpath.stat().st_size
        except OSError:
            return 0

    def log_text(self, since=0):
        try:
            with open(self.logpath, "rb") as f:
                f.seek(since)
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_tail(self, lines=40, since=0):
        return "\n".join(self.log_text(since).splitlines()[-lines:])


def render_cfg(template, **values):
    text = template
    for k, v in values.items():
        text = text.replace("{{%s}}" % k, str(v))
    left = re.findall(r"\{\{[A-Z_]+\}\}", text)
    if left:
        raise RuntimeError("unrendered placeholders in config: %s" % left)
    return text


# --------------------------------------------------------------------------------------
# Test context and helpers
# --------------------------------------------------------------------------------------

class Ctx:
    def __init__(self, binary, modules_dir, module_path, workdir, log_level):
        self.binary = binary
        self.modules_dir = modules_dir
        self.module_path = module_path
        self.workdir = Path(workdir)
        self.log_level = log_level
        self.sso = None
        self.instances = {}
        self.mpath = None
        self.nonce_secret = secrets.token_hex(24)     # 48 bytes

    def prepare_mpath(self):
        mp = self.workdir / "modules"
        mp.mkdir(exist_ok=True)
        for so in Path(self.modules_dir).glob("*.so"):
            link = mp / so.name
            if not link.exists():
                link.symlink_to(so)
        if self.module_path:
            dst = mp / "sso_auth.so"
            if dst.exists() or dst.is_symlink():
                dst.unlink()
            # a copy: a rebuild of target/ during the run must not touch the loaded file
            shutil.copy2(self.module_path, dst)
        self.mpath = mp

    def instance(self, name="main"):
        """The OpenSIPS instance `name`, started on first use."""
        inst = self.instances.get(name)
        if inst is not None:
            if not inst.running():
                raise Fail("OpenSIPS '%s' is no longer running" % name)
            return inst
        nonce_expire = 2 if name == "short" else 300
        port = free_udp_port()
        tmpl = (HERE / "opensips_e2e.cfg.tmpl").read_text()
        cfg = render_cfg(tmpl, LOG_LEVEL=self.log_level, SIP_PORT=port, MPATH=self.mpath,
                         SSO_MODULE=self.mpath / "sso_auth.so", SSO_URL=self.sso.url,
                         CLIENT_ID=self.sso.client_id, CLIENT_SECRET=self.sso.client_secret,
                         NONCE_SECRET=self.nonce_secret, NONCE_EXPIRE=nonce_expire,
                         HTTP_TIMEOUT=HTTP_TIMEOUT_MS, CACHE_TTL=60, AUTHZ_SERVER=AUTHZ_SERVER)
        inst = OpenSips(name, self.binary, self.workdir, cfg)
        self.instances[name] = inst
        inst.start(port)
        inst.wait_ready()
        return inst

    @property
    def port(self):
        return self.instance("main").port

    def stop_all(self):
        for inst in self.instances.values():
            inst.stop()


def code_of(resp):
    v = resp.get("X-Auth-Code")
    try:
        return int(v) if v is not None else None
    except ValueError:
        return v


def expect(resp, status, code, what=""):
    label = (what + ": ") if what else ""
    if resp.status != status or code_of(resp) != code:
        raise Fail("%sexpected %d with X-Auth-Code %s, got %d %s with X-Auth-Code %s"
                   % (label, status, code, resp.status, resp.reason, resp.get("X-Auth-Code")))


def client(ctx, user="alice", instance="main", domain=DOMAIN):
    return SipClient(ctx.instance(instance).port, user=user, domain=domain)


def aor(user, domain=DOMAIN):
    return "sip:%s@%s" % (user, domain)


def challenge_for(c, method="REGISTER", alg=None, qop=None, extra=(), body=b"", **kw):
    """Send `method` without credentials; return (response, digest challenges)."""
    hdrs = list(extra)
    if alg is not None:
        hdrs.append(("X-Test-Alg", alg))
    if qop is not None:
        hdrs.append(("X-Test-Qop", qop))
    _req, resp = c.request(method, headers=hdrs, body=body, **kw)
    want = 401 if method == "REGISTER" else 407
    if resp.status != want:
        raise Fail("%s without credentials: expected %d, got %d %s (X-Auth-Code %s)"
                   % (method, want, resp.status, resp.reason, resp.get("X-Auth-Code")))
    ds = resp.digest_challenges()
    check(ds, "%d without a Digest challenge" % want)
    return resp, ds


def digest_request(c, method, password, chal, alg=None, qop_hdr=None, qop=None, body=b"",
                   username=None, extra=(), mutate=None, timeout=5.0, **kw):
    """Send `method` with Digest credentials answering `chal`. Returns (req, resp, info)."""
    hdr = "Authorization" if method == "REGISTER" else "Proxy-Authorization"
    req_probe = c.build(method, body=body, **kw)   # to learn the R-URI
    c.cseq -= 1
    uri = req_probe.uri
    value, info = digest_credentials(chal, method, uri, username or c.user, password,
                                     qop=qop, body=body)
    if mutate:
        value = mutate(value, info)
    hdrs = [(hdr, value)] + list(extra)
    if alg is not None:
        hdrs.append(("X-Test-Alg", alg))
    if qop_hdr is not None:
        hdrs.append(("X-Test-Qop", qop_hdr))
    req, resp = c.request(method, headers=hdrs, body=body, timeout=timeout, **kw)
    return req, resp, info


def digest_login(ctx, user="alice", password=None, method="REGISTER", alg=None, qop_hdr=None,
                 instance="main", body=b"", want=(200, 2), **kw):
    password = password or {"alice": "alicepw", "bob": "bobpw", "carol": "carolpw"}.get(user, "x")
    with client(ctx, user, instance) as c:
        _r, ds = challenge_for(c, method, alg=alg, qop=qop_hdr, body=body, **kw)
        req, resp, info = digest_request(c, method, password, ds[0], alg=alg, qop_hdr=qop_hdr,
                                         body=body, **kw)
    if want is not None:
        expect(resp, want[0], want[1], "%s Digest login of %s" % (method, user))
    return resp, info


def login_token(ctx, user="alice"):
    resp, _ = digest_login(ctx, user)
    tok = resp.get("X-SSO-Token")
    check(tok, "Digest login reply carries no X-SSO-Token")
    return tok


def bearer(resp):
    b = resp.bearer_challenges()
    check(b, "no Bearer challenge in %d reply" % resp.status)
    return b[0]


# --------------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------------

CASES = []


def case(name, instance="main"):
    def deco(fn):
        CASES.append((name, fn, instance))
        return fn
    return deco


@case("register_no_credentials_challenge")
def t_register_no_creds(ctx):
    with client(ctx) as c:
        resp, ds = challenge_for(c)
    eq(code_of(resp), -4, "X-Auth-Code")
    eq(len(ds), 1, "number of Digest challenges")
    d = ds[0]
    eq(d.get("realm"), DOMAIN, "Digest realm")
    check(d.get("nonce"), "Digest nonce missing")
    eq(d.qops, ["auth"], "Digest qop")
    eq(d.get("algorithm"), "MD5", "Digest algorithm")
    check(d.get("stale") is None, "stale present on a first challenge")
    b = bearer(resp)
    eq(b.get("realm"), DOMAIN, "Bearer realm")
    eq(b.get("authz_server"), AUTHZ_SERVER, "Bearer authz_server")
    eq(b.get("scope"), "sip", "Bearer scope")
    check(b.get("error") is None, "Bearer challenge has error=%r without a token" % b.get("error"))
    check(not resp.has("Proxy-Authenticate"), "401 carries Proxy-Authenticate")
    # the nonce is not reused for a second challenge
    with client(ctx) as c:
        _r, ds2 = challenge_for(c)
    check(ds2[0].get("nonce") != d.get("nonce"), "two challenges got the same nonce")


@case("register_digest_login_ok")
def t_register_login(ctx):
    sso = ctx.sso
    n_tok = sso.count("token")
    with client(ctx) as c:
        _r, ds = challenge_for(c)
        req, resp, info = digest_request(c, "REGISTER", "alicepw", ds[0])
    expect(resp, 200, 2)
    tok = resp.get("X-SSO-Token")
    check(tok, "200 OK without X-SSO-Token")
    eq(len(resp.get_all("X-SSO-Token")), 1, "number of X-SSO-Token headers")
    check(tok in sso.tokens and sso.tokens[tok]["username"] == "alice",
          "X-SSO-Token %r is not the token the SSO issued for alice" % tok)
    eq(sso.count("token") - n_tok, 1, "/token calls")
    contacts = " ".join(resp.get_all("Contact"))
    check("sip:alice@%s:%d" % c.local in contacts, "contact not saved (200 Contact: %r)" % contacts)
    form, hdrs = sso.last("token")
    eq(form.get("grant_type"), DIGEST_GRANT, "grant_type")
    for k, want in (("username", "alice"), ("realm", DOMAIN), ("nonce", info["nonce"]),
                    ("uri", req.uri), ("response", info["response"]), ("method", "REGISTER"),
                    ("qop", "auth"), ("nc", info["nc"]), ("cnonce", info["cnonce"])):
        eq(form.get(k), want, "/token form field %s" % k)
    eq((form.get("algorithm") or "MD5").upper(), "MD5", "/token algorithm")
    check((hdrs.get("Authorization") or "").startswith("Basic "), "/token without Basic auth")


@case("token_reuse_cached")
def t_token_cache(ctx):
    tok = login_token(ctx)
    sso = ctx.sso
    n0 = sso.count("introspect")
    for i in range(3):
        with client(ctx) as c:
            _q, resp = c.request("REGISTER", headers=[("X-SSO-Token", tok)])
        expect(resp, 200, 1, "token use #%d" % (i + 1))
        check(not resp.has("X-SSO-Token"), "token-authorized reply carries a new X-SSO-Token")
        if i == 0:
            eq(sso.count("introspect") - n0, 1, "introspections after first use")
            form, _h = sso.last("introspect")
            eq(form.get("token"), tok, "introspected token")
            eq(form.get("token_type_hint"), "access_token", "token_type_hint")
    eq(sso.count("introspect") - n0, 1, "introspections after 3 uses (cache_ttl=60)")


@case("token_as_authorization_bearer")
def t_token_bearer(ctx):
    tok = login_token(ctx)
    with client(ctx) as c:
        _q, resp = c.request("REGISTER", headers=[("Authorization", "Bearer " + tok)])
    expect(resp, 200, 1)


@case("token_of_other_user_mismatch")
def t_token_mismatch(ctx):
    tok = ctx.sso.issue_token("bob")
    with client(ctx) as c:
        _q, resp = c.request("REGISTER", headers=[("X-SSO-Token", tok)])
    expect(resp, 401, -7)
    eq(bearer(resp).get("error"), "invalid_request", "Bearer error")
    check(resp.digest_challenges(), "no Digest challenge next to the Bearer one")


@case("token_unknown_invalid")
def t_token_unknown(ctx):
    with client(ctx) as c:
        _q, resp = c.request("REGISTER", headers=[("X-SSO-Token", random_token())])
    expect(resp, 401, -6)
    eq(bearer(resp).get("error"), "invalid_token", "Bearer error")


@case("token_inactive_invalid")
def t_token_inactive(ctx):
    tok = ctx.sso.issue_token("alice", active=False)
    with client(ctx) as c:
        _q, resp = c.request("REGISTER", headers=[("Authorization", "Bearer " + tok)])
    expect(resp, 401, -6)
    eq(bearer(resp).get("error"), "invalid_token", "Bearer error")


@case("token_expired_but_active_flag")
def t_token_expired(ctx):
    # The SSO (wrongly) says active with an exp in the past: the module must check exp.
    tok = ctx.sso.issue_token("alice", lifetime=-30, report_as_is=True)
    with client(ctx) as c:
        _q, resp = c.request("REGISTER", headers=[("X-SSO-Token", tok)])
    expect(resp, 401, -6)
    eq(bearer(resp).get("error"), "invalid_token", "Bearer error")


@case("token_username_with_domain")
def t_token_user_at(ctx):
    good = ctx.sso.issue_token("alice@" + DOMAIN)
    bad = ctx.sso.issue_token("alice@other.example.net")
    with client(ctx) as c:
        _q, resp = c.request("REGISTER", headers=[("X-SSO-Token", good)])
    expect(resp, 200, 1, "token user alice@%s" % DOMAIN)
    with client(ctx) as c:
        _q, resp = c.request("REGISTER", headers=[("X-SSO-Token", bad)])
    expect(resp, 401, -7, "token user alice@other.example.net")


@case("digest_wrong_password")
def t_wrong_pw(ctx):
    resp, _ = digest_login(ctx, "alice", password="not-the-password", want=(401, -2))
    check(resp.digest_challenges(), "no new challenge after wrong password")


@case("digest_unknown_user")
def t_unknown_user(ctx):
    n = ctx.sso.count("token")
    digest_login(ctx, "mallory", password="whatever", want=(401, -1))
    eq(ctx.sso.count("token") - n, 1, "/token calls")


@case("digest_forged_nonce")
def t_forged_nonce(ctx):
    with client(ctx) as c:
        _r, ds = challenge_for(c)
        ch = ds[0]
        nonce = ch.get("nonce")
        i = len(nonce) // 2
        ch.params["nonce"] = nonce[:i] + ("A" if nonce[i] != "A" else "B") + nonce[i + 1:]
        n = ctx.sso.count("token")
        # a response that is right for the forged nonce: only the nonce MAC can catch it
        _req, resp, _info = digest_request(c, "REGISTER", "alicepw", ch)
    expect(resp, 401, -8, "forged nonce")
    eq(ctx.sso.count("token") - n, 0, "/token calls for a forged nonce")
    check(resp.digest_challenges(), "no new challenge after a forged nonce")


@case("digest_nonce_replay")
def t_nonce_replay(ctx):
    with client(ctx) as c:
        _r, ds = challenge_for(c)
        req, resp, _info = digest_request(c, "REGISTER", "alicepw", ds[0])
        expect(resp, 200, 2, "first use")
        n = ctx.sso.count("token")
        hdr = [h for h in req.headers if h[0] == "Authorization"]
        _q, resp2 = c.request("REGISTER", headers=hdr)
    expect(resp2, 401, -8, "replayed credentials")
    eq(ctx.sso.count("token") - n, 0, "/token calls for the replay")


@case("digest_stale_nonce", instance="short")
def t_stale(ctx):
    with client(ctx, instance="short") as c:
        _r, ds = challenge_for(c)
        time.sleep(3.0)
        n = ctx.sso.count("token")
        _req, resp, _info = digest_request(c, "REGISTER", "alicepw", ds[0])
        expect(resp, 401, -3, "credentials on a 3 s old nonce (nonce_expire=2)")
        eq(ctx.sso.count("token") - n, 0, "/token calls for a stale nonce")
        new = resp.digest_challenges()
        check(new, "no Digest challenge after stale nonce")
        eq((new[0].get("stale") or "").lower(), "true", "stale flag")
        _req, resp2, _info = digest_request(c, "REGISTER", "alicepw", new[0])
    expect(resp2, 200, 2, "login with the fresh nonce")


@case("digest_username_not_aor")
def t_user_not_aor(ctx):
    with client(ctx) as c:
        kw = dict(from_uri=aor("alice"), to_uri=aor("bob"))
        _r, ds = challenge_for(c, **kw)
        _req, resp, _info = digest_request(c, "REGISTER", "alicepw", ds[0], **kw)
    expect(resp, 401, -7)


@case("digest_other_realm_is_no_credentials")
def t_other_realm(ctx):
    with client(ctx) as c:
        _r, ds = challenge_for(c)
        ch = ds[0]
        ch.params["realm"] = "other.example.net"
        _req, resp, _info = digest_request(c, "REGISTER", "alicepw", ch)
    expect(resp, 401, -4)


@case("invite_no_credentials_407")
def t_invite_407(ctx):
    with client(ctx) as c:
        resp, ds = challenge_for(c, "INVITE", body=b"v=0\r\n")
    eq(code_of(resp), -4, "X-Auth-Code")
    check(not resp.has("WWW-Authenticate"), "407 carries WWW-Authenticate")
    eq(ds[0].get("realm"), DOMAIN, "Digest realm")
    eq(ds[0].qops, ["auth"], "Digest qop")
    bearer(resp)


@case("invite_proxy_digest_ok")
def t_invite_ok(ctx):
    resp, _ = digest_login(ctx, "alice", method="INVITE", body=b"v=0\r\n")
    check(resp.get("X-SSO-Token"), "200 after proxy Digest login without X-SSO-Token")


@case("invite_digest_from_not_aor")
def t_invite_from(ctx):
    with client(ctx, user="bob") as c:
        _r, ds = challenge_for(c, "INVITE")
        _req, resp, _info = digest_request(c, "INVITE", "alicepw", ds[0], username="alice")
    expect(resp, 407, -7)


@case("message_token_proxy_ok")
def t_message_token(ctx):
    tok = ctx.sso.issue_token("alice")
    with client(ctx) as c:
        _q, resp = c.request("MESSAGE", headers=[("X-SSO-Token", tok)], body=b"hi")
    expect(resp, 200, 1)


@case("qop_auth_int_body_hash")
def t_auth_int(ctx):
    body = b"Hello, this body is integrity protected.\r\n"
    resp, info = digest_login(ctx, "alice", method="MESSAGE", qop_hdr="auth-int", body=body)
    eq(info["qop"], "auth-int", "qop used")
    form, _h = ctx.sso.last("token")
    eq(form.get("qop"), "auth-int", "/token qop")
    eq(form.get("body_hash"), hashlib_md5(body), "/token body_hash")
    # same with SHA-256: body_hash uses the request's algorithm
    resp, info = digest_login(ctx, "alice", method="MESSAGE", qop_hdr="auth-int",
                              alg="SHA-256", body=body)
    form, _h = ctx.sso.last("token")
    eq(form.get("body_hash"), digest_hash("SHA-256", body), "/token body_hash (SHA-256)")


def hashlib_md5(b):
    return digest_hash("MD5", b)


@case("qop_auth_and_auth_int_offer")
def t_qop_both(ctx):
    with client(ctx) as c:
        _r, ds = challenge_for(c, qop="auth,auth-int")
    eq(ds[0].qops, ["auth", "auth-int"], "qop offer")
    digest_login(ctx, "alice", qop_hdr="auth,auth-int")


@case("qop_none")
def t_qop_none(ctx):
    with client(ctx) as c:
        _r, ds = challenge_for(c, qop="none")
    check(ds[0].get("qop") is None, "qop present although disabled: %r" % ds[0].get("qop"))
    _resp, info = digest_login(ctx, "alice", qop_hdr="none")
    eq(info["qop"], "", "qop used")
    form, _h = ctx.sso.last("token")
    for k in ("qop", "nc", "cnonce"):
        check(not form.get(k), "/token got %s=%r without qop" % (k, form.get(k)))


@case("sha256_login")
def t_sha256(ctx):
    with client(ctx) as c:
        _r, ds = challenge_for(c, alg="SHA-256")
    eq([d.get("algorithm") for d in ds], ["SHA-256"], "algorithms offered")
    _resp, _info = digest_login(ctx, "alice", alg="SHA-256")
    form, _h = ctx.sso.last("token")
    eq(form.get("algorithm"), "SHA-256", "/token algorithm")


@case("multiple_algorithms_in_order")
def t_multi_alg(ctx):
    with client(ctx) as c:
        resp, ds = challenge_for(c, alg="SHA-256,MD5")
    eq([d.get("algorithm") for d in ds], ["SHA-256", "MD5"], "Digest challenges in order")
    eq(len([v for v in resp.get_all("WWW-Authenticate") if v.lower().startswith("digest")]), 2,
       "WWW-Authenticate Digest headers")
    nonces = [d.get("nonce") for d in ds]
    check(all(nonces), "a challenge without nonce")
    with client(ctx) as c:
        resp, ds = challenge_for(c, alg=",".join(ALL_ALGORITHMS))
    eq([d.get("algorithm") for d in ds], ALL_ALGORITHMS, "six Digest challenges in order")
    # answer the second one (MD5) of a SHA-256,MD5 challenge
    with client(ctx) as c:
        _r, ds = challenge_for(c, alg="SHA-256,MD5")
        _req, resp, _info = digest_request(c, "REGISTER", "alicepw", ds[1], alg="SHA-256,MD5")
    expect(resp, 200, 2, "login answering the MD5 challenge of two")


@case("all_algorithms_login")
def t_all_algs(ctx):
    bad = []
    for alg in ALL_ALGORITHMS:
        # -sess needs a cnonce, which only exists with a qop
        for qop in (("auth", "auth-int") if alg.endswith("-sess") else ("auth", "none")):
            try:
                digest_login(ctx, "alice", alg=alg, qop_hdr=qop)
                form, _h = ctx.sso.last("token")
                if (form.get("algorithm") or "").upper() != alg.upper():
                    bad.append("%s/%s: /token algorithm=%r" % (alg, qop, form.get("algorithm")))
            except Fail as e:
                bad.append("%s/%s: %s" % (alg, qop, e))
    check(not bad, "; ".join(bad))


@case("empty_realm_defaults")
def t_empty_realm(ctx):
    with client(ctx) as c:
        _r, ds = challenge_for(c, extra=[("X-Test-Realm", "empty")],
                               from_uri="sip:alice@" + DOMAIN, to_uri="sip:alice@" + DOMAIN)
    eq(ds[0].get("realm"), DOMAIN, "REGISTER realm (To domain)")
    with client(ctx) as c:
        _r, ds = challenge_for(c, "MESSAGE", extra=[("X-Test-Realm", "empty")],
                               from_uri="sip:alice@from.example.org",
                               to_uri="sip:bob@" + DOMAIN)
    eq(ds[0].get("realm"), "from.example.org", "MESSAGE realm (From domain)")


def _relay(ctx, cred_headers, body=b"relay me"):
    """MESSAGE to relay@ with the given credential headers; returns the relayed request."""
    with SipUas() as uas, client(ctx) as c:
        hdrs = list(cred_headers) + [("X-Test-Relay", uas.hostport), ("X-Keep", "yes")]
        req = c.build("MESSAGE", uri="sip:relay@" + DOMAIN, to_uri="sip:relay@" + DOMAIN,
                      headers=hdrs, body=body)
        c.send(req)
        fwd, addr = uas.recv_request(3.0)
        if fwd is None:
            try:
                resp = c.wait_final(req, 1.0)
                raise Fail("nothing relayed; client got %d %s (X-Auth-Code %s)"
                           % (resp.status, resp.reason, resp.get("X-Auth-Code")))
            except SipError:
                raise Fail("nothing relayed and no answer")
        uas.reply(fwd, addr, 200, "OK")
        resp = c.wait_final(req, 3.0)
        eq(resp.status, 200, "relayed MESSAGE final status")
    check(fwd.get("X-Keep") == "yes", "unrelated header lost in relay")
    eq(fwd.body, body, "relayed body")
    return fwd


@case("consume_credentials_digest_relay")
def t_consume_digest(ctx):
    with client(ctx) as c:
        _r, ds = challenge_for(c, "MESSAGE", to_uri="sip:relay@" + DOMAIN,
                               uri="sip:relay@" + DOMAIN)
    value, _info = digest_credentials(ds[0], "MESSAGE", "sip:relay@" + DOMAIN, "alice",
                                      "alicepw")
    fwd = _relay(ctx, [("Proxy-Authorization", value)])
    check(not fwd.has("Proxy-Authorization"),
          "relayed request still has Proxy-Authorization: %r" % fwd.get("Proxy-Authorization"))


@case("consume_credentials_token_relay")
def t_consume_token(ctx):
    tok = ctx.sso.issue_token("alice")
    fwd = _relay(ctx, [("X-SSO-Token", tok)])
    check(not fwd.has("X-SSO-Token"), "relayed request still has X-SSO-Token")


# ---- SSO faults ----------------------------------------------------------------------

FAULTS = ["refuse", "hang", "slow_headers", "slow_body", "500", "302", "garbage",
          "wrong_types", "wrong_types_exp", "huge", "close", "bad_client"]
TIMED = {"hang", "slow_headers", "slow_body"}


def _set_fault(sso, mode):
    if mode == "bad_client":
        sso.client_secret = "rotated-" + secrets.token_hex(4)
    else:
        sso.mode = mode


def _clear_fault(sso, saved_secret):
    sso.mode = None
    sso.client_secret = saved_secret


def _fault_case(mode, endpoint):
    def run(ctx):
        sso = ctx.sso
        saved = sso.client_secret
        redirected0 = sso.count("redirected-" + endpoint)
        c = client(ctx)
        try:
            if endpoint == "token":
                _r, ds = challenge_for(c)
                chal = ds[0]
            _set_fault(sso, mode)
            t0 = time.monotonic()
            if endpoint == "introspect":
                tok = sso.issue_token("alice")     # fresh: never cached
                _q, resp = c.request("REGISTER", headers=[("X-SSO-Token", tok)], timeout=8)
            else:
                _q, resp, _i = digest_request(c, "REGISTER", "alicepw", chal, timeout=8)
            ms = (time.monotonic() - t0) * 1000
        finally:
            _clear_fault(sso, saved)
            c.close()
        print("      %s/%s: %d %s X-Auth-Code %s after %.0f ms"
              % (mode, endpoint, resp.status, resp.reason, resp.get("X-Auth-Code"), ms))
        expect(resp, 500, -5)
        if mode in TIMED:
            check(ms <= HTTP_TIMEOUT_MS + 400,
                  "answered after %.0f ms, http_timeout is %d ms" % (ms, HTTP_TIMEOUT_MS))
            check(ms >= HTTP_TIMEOUT_MS * 0.8,
                  "answered after %.0f ms, before http_timeout (%d ms)?" % (ms, HTTP_TIMEOUT_MS))
        if mode == "302":
            eq(sso.count("redirected-" + endpoint) - redirected0, 0, "redirect followed")
        # the SSO is back: the module must recover at once
        tok = sso.issue_token("alice")
        with client(ctx) as c2:
            _q, resp = c2.request("REGISTER", headers=[("X-SSO-Token", tok)])
        expect(resp, 200, 1, "first request after the SSO recovered")
    return run


for _mode in FAULTS:
    for _ep in ("introspect", "token"):
        case("fault_%s_%s" % (_mode, _ep))(_fault_case(_mode, _ep))


@case("zz_alive_and_no_crash")
def t_alive(ctx):
    for name, inst in ctx.instances.items():
        check(inst.running(), "OpenSIPS '%s' exited (status %s)" % (name, inst.proc.returncode))
        check(options_ping(inst.port, 2.0), "OpenSIPS '%s' no longer answers OPTIONS" % name)
        log = inst.log_text()
        for pat in CRASH_PATTERNS:
            m = re.search(pat, log, re.I)
            check(not m, "OpenSIPS '%s' log matches /%s/: %r" % (
                name, pat, log[max(0, m.start() - 120): m.end() + 120] if m else ""))


# --------------------------------------------------------------------------------------
# Harness self-test (no sso_auth needed)
# --------------------------------------------------------------------------------------

SELFTEST_CFG = """
log_level = 3
stderror_enabled = yes
syslog_enabled = no
udp_workers = 2
socket = udp:127.0.0.1:{{SIP_PORT}}
mpath = "{{MPATH}}"
loadmodule "proto_udp.so"
loadmodule "signaling.so"
loadmodule "sl.so"
loadmodule "tm.so"
loadmodule "sipmsgops.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
modparam("usrloc", "working_mode_preset", "single-instance-no-db")
route {
    if (is_method("ACK")) exit;
    if (is_method("OPTIONS")) { sl_send_reply(200, "Alive"); exit; }
    append_to_reply("X-Auth-Code: 7\\r\\n");
    if (is_method("REGISTER")) { if (!save("location")) sl_reply_error(); exit; }
    if ($rU == "relay") { $du = "sip:" + $hdr(X-Test-Relay); t_relay(); exit; }
    sl_send_reply(403, "Forbidden");
}
"""


def selftest(binary):
    import urllib.request
    import base64
    import json
    ok = True

    def say(good, what):
        nonlocal ok
        ok = ok and good
        print("  %s %s" % ("PASS" if good else "FAIL", what))

    # RFC 2617 3.5 and RFC 7616 3.9.1 vectors
    say(digest_response("MD5", "Mufasa", "testrealm@host.com", "Circle Of Life", "GET",
                        "/dir/index.html", "dcd98b7102dd2f0e8b11d0f600bfb0c093", "auth",
                        "00000001", "0a4f113b") == "6629fae49393a05397450978507c4ef1",
        "RFC 2617 MD5 vector")
    n7616 = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
    c7616 = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
    say(digest_response("MD5", "Mufasa", "http-auth@example.org", "Circle of Life", "GET",
                        "/dir/index.html", n7616, "auth", "00000001", c7616)
        == "8ca523f5e9506fed4657c9700eebdbec", "RFC 7616 MD5 vector")
    say(digest_response("SHA-256", "Mufasa", "http-auth@example.org", "Circle of Life", "GET",
                        "/dir/index.html", n7616, "auth", "00000001", c7616)
        == "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
        "RFC 7616 SHA-256 vector")
    say(_sha512_256_fallback(b"abc")
        == "53048e2681941ef99b2e29b76b4c7dabe4c2d0c634fc6d46e0e2f13107e7af23",
        "SHA-512/256 fallback (FIPS 180-4 'abc')")

    sso = SsoServer().start()
    try:
        def post(path, form, secret=sso.client_secret):
            data = "&".join("%s=%s" % (k, v) for k, v in form.items()).encode()
            rq = urllib.request.Request(sso.url + path, data=data, method="POST")
            rq.add_header("Authorization", "Basic " + base64.b64encode(
                ("%s:%s" % (sso.client_id, secret)).encode()).decode())
            try:
                with urllib.request.urlopen(rq, timeout=3) as r:
                    return r.status, json.loads(r.read())
            except urllib.error.HTTPError as e:
                return e.code, json.loads(e.read())
        nonce, cnonce = "abc123", "c0ffee"
        resp = digest_response("SHA-256-sess", "alice", DOMAIN, "alicepw", "REGISTER",
                               "sip:" + DOMAIN, nonce, "auth", "00000001", cnonce)
        form = dict(grant_type=DIGEST_GRANT, username="alice", realm=DOMAIN, nonce=nonce,
                    uri="sip:" + DOMAIN, response=resp, algorithm="SHA-256-sess",
                    method="REGISTER", qop="auth", nc="00000001", cnonce=cnonce)
        st, js = post("/token", form)
        say(st == 200 and js.get("token_type") == "Bearer", "SSO /token accepts a right response")
        st2, js2 = post("/introspect", {"token": js.get("access_token", ""),
                                        "token_type_hint": "access_token"})
        say(st2 == 200 and js2.get("active") is True and js2.get("username") == "alice",
            "SSO /introspect knows the issued token")
        st, js = post("/token", dict(form, response="0" * 64))
        say(st == 400 and js.get("error") == "invalid_grant", "SSO /token rejects a bad response")
        st, js = post("/token", dict(form, username="mallory"))
        say(st == 400 and js.get("error") == "unknown_user", "SSO /token: unknown_user")
        st, js = post("/introspect", {"token": "x"}, secret="wrong")
        say(st == 401 and js.get("error") == "invalid_client", "SSO checks client credentials")
        sso.mode = "refuse"
        try:
            post("/introspect", {"token": "x"})
            say(False, "SSO refuse mode refuses")
        except (urllib.error.URLError, ConnectionError):
            say(True, "SSO refuse mode refuses")
        sso.mode = None
        st, js = post("/introspect", {"token": "x"})
        say(st == 200 and js == {"active": False}, "SSO back after refuse")
        sso.mode = "hang"
        t0 = time.monotonic()
        try:
            post("/introspect", {"token": "x"}) if False else urllib.request.urlopen(
                urllib.request.Request(sso.url + "/introspect", data=b"token=x"), timeout=0.5)
            say(False, "SSO hang mode hangs")
        except Exception:  # noqa: BLE001
            say(time.monotonic() - t0 < 1.5, "SSO hang mode hangs")
        sso.mode = None
        # challenge parsing
        from sip import parse_challenges
        chs = parse_challenges('Digest realm="a, b", nonce="n\\"1", qop="auth,auth-int", '
                               'algorithm=SHA-256, stale=true, Bearer realm="x", error="invalid_token"')
        say([c.scheme for c in chs] == ["Digest", "Bearer"] and chs[0].get("realm") == "a, b"
            and chs[0].get("nonce") == 'n"1' and chs[0].qops == ["auth", "auth-int"]
            and chs[1].get("error") == "invalid_token", "challenge parser")
        sch, prm = parse_auth_params('Digest username="alice", nc=00000001')
        say(sch == "Digest" and prm["nc"] == "00000001", "credentials parser")
    finally:
        sso.stop()

    if binary is None:
        print("  SKIP OpenSIPS start/stop (no OpenSIPS found)")
        return ok
    mdir = find_modules_dir(binary)
    if not mdir:
        say(False, "stock modules dir found for %s" % binary)
        return ok
    work = Path(tempfile.mkdtemp(prefix="sso-e2e-self-"))
    ctx = Ctx(binary, mdir, None, work, 3)
    ctx.prepare_mpath()
    port = free_udp_port()
    inst = OpenSips("self", binary, work, render_cfg(SELFTEST_CFG, SIP_PORT=port, MPATH=ctx.mpath))
    try:
        inst.start(port)
        inst.wait_ready()
        say(True, "OpenSIPS %s starts and answers OPTIONS" % binary)
        with SipClient(port) as c:
            _q, r = c.request("REGISTER", expires=60)
        say(r.status == 200 and r.get("X-Auth-Code") == "7" and r.has("Contact"),
            "REGISTER saved, append_to_reply seen (%d)" % r.status)
        with SipUas() as uas, SipClient(port) as c:
            req = c.build("MESSAGE", uri="sip:relay@" + DOMAIN, to_uri="sip:relay@" + DOMAIN,
                          headers=[("X-Test-Relay", uas.hostport)], body=b"hi")
            c.send(req)
            fwd, addr = uas.recv_request(3)
            if fwd:
                uas.reply(fwd, addr)
                r = c.wait_final(req, 3)
            say(fwd is not None and r.status == 200, "t_relay to the test UAS and back")
    except (Fail, SipError) as e:
        say(False, "OpenSIPS harness: %s\n%s" % (e, inst.log_tail(30)))
    finally:
        inst.stop()
        shutil.rmtree(work, ignore_errors=True)
    return ok


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------

def summary(p, f, s):
    print("e2e: %d passed, %d failed, %d skipped" % (p, f, s), flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-k", dest="filter", action="append", default=[],
                    help="run only cases whose name contains this substring (repeatable)")
    ap.add_argument("--list", action="store_true", help="list case names")
    ap.add_argument("--selftest", action="store_true", help="check the harness only")
    ap.add_argument("-v", "--verbose", action="store_true", help="log SSO requests")
    args = ap.parse_args(argv)

    if args.list:
        for name, _fn, _i in CASES:
            print(name)
        return 0

    binary = find_opensips()
    if args.selftest:
        ok = selftest(binary)
        print("selftest: %s" % ("OK" if ok else "FAILED"))
        return 0 if ok else 1

    cases = [c for c in CASES if not args.filter or any(k in c[0] for k in args.filter)]
    if binary is None:
        print("=" * 72)
        print("E2E SKIPPED: no OpenSIPS found (set OPENSIPS=/path/to/sbin/opensips)")
        print("=" * 72)
        summary(0, 0, len(cases))
        return 0

    module = os.environ.get("SSO_AUTH_MODULE") or str(REPO / "target/release/libsso_auth.so")
    problems = []
    if not os.path.isfile(module):
        problems.append("sso_auth module not found at %s (build it with `make build` or "
                        "`cargo build --release`, or set SSO_AUTH_MODULE)" % module)
    mdir = find_modules_dir(binary)
    if not mdir:
        problems.append("stock OpenSIPS modules not found next to %s (set OPENSIPS_MODULES_DIR)"
                        % binary)
    if problems:
        for p in problems:
            print("E2E ERROR: " + p)
        summary(0, len(cases), 0)
        return 1

    version = subprocess.run([binary, "-V"], capture_output=True, text=True, timeout=10)
    print("OpenSIPS: %s (%s)" % (binary, (version.stdout or version.stderr).splitlines()[0]
                                 if (version.stdout or version.stderr) else "?"))
    print("modules:  %s" % mdir)
    print("sso_auth: %s" % module)

    t_start = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="sso-e2e-"))
    log_level = int(os.environ.get("E2E_LOG_LEVEL", "3"))
    ctx = Ctx(binary, mdir, module, work, log_level)
    ctx.prepare_mpath()
    ctx.sso = SsoServer(verbose=args.verbose).start()
    print("SSO:      %s   workdir: %s" % (ctx.sso.url, work))

    passed = failed = skipped = 0
    try:
        try:
            ctx.instance("main")
        except Exception as e:  # noqa: BLE001
            inst = ctx.instances.get("main")
            print("FAIL startup: %s" % e)
            if inst:
                print("---- OpenSIPS log (tail) ----\n%s\n----" % inst.log_tail(60))
            summary(0, len(cases), 0)
            return 1
        for name, fn, inst_name in cases:
            inst = None
            since = 0
            t0 = time.monotonic()
            try:
                inst = ctx.instance(inst_name)
                since = inst.log_size()
                fn(ctx)
                passed += 1
                print("PASS %s (%.0f ms)" % (name, (time.monotonic() - t0) * 1000), flush=True)
            except Skip as e:
                skipped += 1
                print("SKIP %s: %s" % (name, e), flush=True)
            except (Fail, SipError) as e:
                failed += 1
                print("FAIL %s: %s" % (name, e), flush=True)
                if inst is not None:
                    tail = inst.log_tail(25, since)
                    if tail.strip():
                        print("    ---- OpenSIPS '%s' log during this case ----" % inst.name)
                        print("\n".join("    | " + ln for ln in tail.splitlines()))
            except Exception as e:  # noqa: BLE001 - a harness bug is a failure too
                failed += 1
                print("FAIL %s: harness error %s: %s" % (name, type(e).__name__, e), flush=True)
                traceback.print_exc()
            finally:
                ctx.sso.mode = None
    finally:
        ctx.stop_all()
        ctx.sso.stop()
    if failed:
        for name, inst in ctx.instances.items():
            print("---- OpenSIPS '%s' log tail (%s) ----" % (name, inst.logpath))
            print(inst.log_tail(40))
    if os.environ.get("E2E_KEEP") == "1" or failed:
        print("kept %s (configs, OpenSIPS logs)" % work)
    else:
        shutil.rmtree(work, ignore_errors=True)
    print("total %.1f s" % (time.monotonic() - t_start))
    summary(passed, failed, skipped)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
