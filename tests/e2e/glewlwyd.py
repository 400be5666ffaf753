#!/usr/bin/env python3
"""sso_auth against a real OAuth2 server: Glewlwyd 2.x (Debian package `glewlwyd`).

    python3 tests/e2e/glewlwyd.py

What happens:
  * a throw-away Glewlwyd listens on 127.0.0.1 with an SQLite database initialised from
    the package's own SQL script; the test logs in as the built-in admin and, through the
    admin REST API, creates the scope `sip`, the users alice and bob, a confidential
    client `opensips` (password grant, client_secret_basic) and an instance `oidc` of the
    OpenID Connect plugin with the password grant and RFC 7662/7009 introspection and
    revocation for the token's own client;
  * alice gets an access token with the password grant; OpenSIPS (the e2e template,
    introspect_url = http://127.0.0.1:<port>/api/oidc/introspect, cache_ttl 0) must
    accept it for alice (code 1), refuse it for bob (-7), refuse it once revoked (-6) and
    refuse a token Glewlwyd issued to another client (-6: Glewlwyd only shows a client
    the tokens issued to that client).

Environment:
    OPENSIPS            sbin/opensips (else `opensips` on PATH; none -> skipped)
    SSO_AUTH_MODULE     the module .so (else target/release/libsso_auth.so)
    GLEWLWYD            the glewlwyd binary (else `glewlwyd` on PATH)
    SSO_E2E_INSTALL     1 = `apt-get install -y glewlwyd` when it is missing
    E2E_KEEP            1 = keep the temporary directory (configs, database, logs)

Whenever Glewlwyd cannot be installed, started or configured, the test prints
`GLEWLWYD SKIPPED: <reason>` and exits 0. The last line printed is always
`glewlwyd: N passed, N failed, N skipped`; exit status 1 when a case failed.
Python 3.11 standard library only.
"""

import base64
import http.cookiejar
import json
import os
import secrets
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from types import SimpleNamespace

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))

from run import (DOMAIN, Ctx, Fail, code_of, find_modules_dir, stop_process_group,  # noqa: E402
                 find_opensips, render_cfg)
from sip import SipClient  # noqa: E402

PLUGIN = "oidc"                 # name of the OIDC plugin instance -> /api/oidc/...
CLIENT_ID = "opensips"
CLIENT_SECRET = "opensips-" + secrets.token_hex(12)
OTHER_CLIENT_ID = "softphone"
OTHER_CLIENT_SECRET = "softphone-" + secrets.token_hex(12)
USERS = {"alice": "alice-" + secrets.token_hex(6), "bob": "bob-" + secrets.token_hex(6)}
# The package's init script creates this administrator (documented in its database README).
ADMIN = ("admin", "password")
HTTP_TIMEOUT_MS = 3000
INSTALL_TIMEOUT = 300
SCHEMA_CANDIDATES = [
    "/usr/share/dbconfig-common/data/glewlwyd/install/sqlite3",
    "/usr/share/doc/glewlwyd/database/init.sqlite3.sql",
    "/usr/share/doc/glewlwyd/database/init.sqlite3.sql.gz",
    "/usr/share/glewlwyd/database/init.sqlite3.sql",
    "/usr/local/share/glewlwyd/database/init.sqlite3.sql",
]


class SetupError(Exception):
    """Glewlwyd could not be installed, started or configured: the test is skipped."""


def summary(passed, failed, skipped):
    print("glewlwyd: %d passed, %d failed, %d skipped" % (passed, failed, skipped), flush=True)


def skip(reason):
    print("=" * 72)
    print("GLEWLWYD SKIPPED: %s" % reason)
    print("=" * 72, flush=True)
    summary(0, 0, 1)
    return 0


# --------------------------------------------------------------------------------------
# Finding / installing Glewlwyd
# --------------------------------------------------------------------------------------

def find_glewlwyd():
    env = os.environ.get("GLEWLWYD")
    if env:
        return env if os.path.isfile(env) and os.access(env, os.X_OK) else None
    return shutil.which("glewlwyd")


def install_glewlwyd():
    """apt-get install -y glewlwyd (once more after apt-get update if the first try fails)."""
    if not shutil.which("apt-get"):
        raise SetupError("glewlwyd is not installed and there is no apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    deadline = time.monotonic() + INSTALL_TIMEOUT

    def apt(*args):
        left = deadline - time.monotonic()
        if left <= 0:
            raise SetupError("installing glewlwyd took longer than %ds" % INSTALL_TIMEOUT)
        try:
            p = subprocess.run(["apt-get", *args], env=env, stdin=subprocess.DEVNULL,
                               capture_output=True, text=True, timeout=left)
        except subprocess.TimeoutExpired:
            raise SetupError("`apt-get %s` did not finish within %ds"
                             % (" ".join(args), INSTALL_TIMEOUT)) from None
        return p

    print("installing glewlwyd with apt-get (SSO_E2E_INSTALL=1) ...", flush=True)
    p = apt("install", "-y", "--no-install-recommends", "glewlwyd")
    if p.returncode != 0:
        apt("update")
        p = apt("install", "-y", "--no-install-recommends", "glewlwyd")
    if p.returncode != 0:
        tail = " | ".join((p.stderr or p.stdout).strip().splitlines()[-3:])
        raise SetupError("`apt-get install -y glewlwyd` failed (status %d): %s"
                         % (p.returncode, tail))
    binary = find_glewlwyd()
    if not binary:
        raise SetupError("apt-get installed glewlwyd but no glewlwyd binary is on PATH")
    return binary


def find_module_dir(binary):
    """The directory with Glewlwyd's user/, client/, scheme/, plugin/ module folders."""
    prefix = Path(os.path.realpath(binary)).parent.parent
    cands = [prefix / "lib/glewlwyd", prefix / "lib64/glewlwyd"]
    cands += sorted(prefix.glob("lib/*-linux-gnu*/glewlwyd"))
    cands += [Path("/usr/lib/glewlwyd"), Path("/usr/local/lib/glewlwyd")]
    for c in cands:
        if (c / "plugin").is_dir() and any((c / "plugin").glob("*protocol_oidc*")):
            return c
    return None


def read_schema():
    for c in SCHEMA_CANDIDATES:
        p = Path(c)
        if not p.is_file():
            continue
        data = p.read_bytes()
        if c.endswith(".gz"):
            import gzip
            data = gzip.decompress(data)
        return c, data.decode("utf-8")
    raise SetupError("no Glewlwyd SQLite init script found (looked at %s)"
                     % ", ".join(SCHEMA_CANDIDATES))


def free_tcp_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# --------------------------------------------------------------------------------------
# HTTP helpers (urllib)
# --------------------------------------------------------------------------------------

class Http:
    def __init__(self, base, cookies=False):
        self.base = base
        handlers = [urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())] \
            if cookies else []
        self.opener = urllib.request.build_opener(*handlers)

    def call(self, method, path, json_body=None, form=None, basic=None, timeout=5.0):
        """Returns (status, body text); never raises on an HTTP error status."""
        data = None
        headers = {"Accept": "application/json"}
        if json_body is not None:
            data = json.dumps(json_body).encode()
            headers["Content-Type"] = "application/json"
        elif form is not None:
            data = urllib.parse.urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        if basic is not None:
            # RFC 6749 2.3.1: form-urlencode id and secret before Basic (no-op for ours)
            cred = "%s:%s" % (urllib.parse.quote(basic[0], safe=""),
                              urllib.parse.quote(basic[1], safe=""))
            headers["Authorization"] = "Basic " + base64.b64encode(cred.encode()).decode()
        req = urllib.request.Request(self.base + path, data=data, headers=headers,
                                     method=method)
        try:
            with self.opener.open(req, timeout=timeout) as resp:
                return resp.status, resp.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode("utf-8", "replace")


# --------------------------------------------------------------------------------------
# Glewlwyd process and its configuration
# --------------------------------------------------------------------------------------

class Glewlwyd:
    def __init__(self, binary, module_dir, workdir):
        self.binary = binary
        self.module_dir = module_dir
        # its own sub-directory: OpenSIPS instances write <name>.log/.cfg into workdir
        self.workdir = Path(workdir) / "glewlwyd-server"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = None
        self.proc = None
        self.logpath = self.workdir / "glewlwyd.log"
        self.outpath = self.workdir / "glewlwyd.out"
        self._outf = None

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    @property
    def plugin_url(self):
        return "%s/api/%s" % (self.url, PLUGIN)

    def init_db(self):
        source, script = read_schema()
        db = self.workdir / "glewlwyd.sqlite3"
        con = sqlite3.connect(str(db))
        try:
            con.executescript(script)
            con.commit()
        except sqlite3.Error as e:
            raise SetupError("initialising the SQLite database from %s failed: %s"
                             % (source, e)) from None
        finally:
            con.close()
        return db

    def start(self, timeout=15.0):
        db = self.init_db()
        self.port = free_tcp_port()
        tmpl = (HERE / "glewlwyd" / "glewlwyd.conf.tmpl").read_text()
        cfg = render_cfg(tmpl, PORT=self.port, LOG_LEVEL="INFO", LOG_FILE=self.logpath,
                         MODULE_DIR=self.module_dir, DB_PATH=db)
        cfgpath = self.workdir / "glewlwyd.conf"
        cfgpath.write_text(cfg)
        self._outf = open(self.outpath, "ab")
        self.proc = subprocess.Popen([self.binary, "--config-file=%s" % cfgpath],
                                     stdin=subprocess.DEVNULL, stdout=self._outf,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        probe = Http(self.url)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SetupError("glewlwyd exited with status %s during startup: %s"
                                 % (self.proc.returncode, self.output_tail(5)))
            try:
                status, _ = probe.call("GET", "/config", timeout=1.0)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise SetupError("glewlwyd did not answer GET /config within %.0fs: %s"
                         % (timeout, self.output_tail(5)))

    def output_tail(self, lines=20):
        text = ""
        for p in (self.outpath, self.logpath):
            try:
                text += p.read_text(errors="replace")
            except OSError:
                pass
        return " | ".join(text.strip().splitlines()[-lines:]) or "(no output)"

    def stop(self):
        if self.proc is None:
            return
        stop_process_group(self.proc)
        if self._outf:
            self._outf.close()
            self._outf = None

    def configure(self):
        """Scope, users, clients and the OIDC plugin instance, through the admin API."""
        admin = Http(self.url + "/api", cookies=True)

        def must(method, path, body, what):
            status, text = admin.call(method, path, json_body=body)
            if status != 200:
                raise SetupError("admin API: %s (%s /api%s) answered %d %s"
                                 % (what, method, path, status, text.strip()[:300]))

        must("POST", "/auth/", {"username": ADMIN[0], "password": ADMIN[1]},
             "admin login (the package's init script creates admin/password)")
        must("POST", "/scope/", {"name": "sip", "display_name": "SIP",
                                 "description": "SIP registration through OpenSIPS",
                                 "password_required": False, "scheme": {}},
             "adding scope sip")
        for user, pw in USERS.items():
            must("POST", "/user/", {"username": user, "password": pw, "name": user.title(),
                                    "scope": ["sip"], "enabled": True},
                 "adding user %s" % user)
        for cid, secret in ((CLIENT_ID, CLIENT_SECRET), (OTHER_CLIENT_ID, OTHER_CLIENT_SECRET)):
            must("POST", "/client/", {
                "client_id": cid, "name": cid, "enabled": True, "confidential": True,
                # `password` is stored hashed; `client_secret` would be stored as is
                "password": secret,
                # the password grant; introspection/revocation need no grant type in 2.7.5
                "authorization_type": ["password"],
                # without it Glewlwyd refuses HTTP Basic client authentication
                "token_endpoint_auth_method": ["client_secret_basic"],
                "scope": [], "redirect_uri": []}, "adding client %s" % cid)
        must("POST", "/mod/plugin/", {
            "module": "oidc", "name": PLUGIN, "display_name": "OpenID Connect",
            "enabled": True,
            "parameters": {
                "iss": self.url,
                "jwt-type": "sha", "jwt-key-size": "256", "key": secrets.token_hex(32),
                "access-token-duration": 600, "refresh-token-duration": 3600,
                "code-duration": 60,
                # the password grant is plain OAuth2, not OIDC: allow non-OIDC requests
                "allow-non-oidc": True,
                "auth-type-password-enabled": True,
                "auth-type-client-enabled": True,
                "auth-type-code-enabled": False,
                "auth-type-refresh-enabled": True,
                # /introspect and /revoke, authenticated with the client's own id+secret
                "introspection-revocation-allowed": True,
                "introspection-revocation-allow-target-client": True,
            }}, "adding the oidc plugin instance")

    # ---- OAuth2 endpoints -----------------------------------------------------------
    def password_grant(self, user, client=(CLIENT_ID, CLIENT_SECRET)):
        status, text = Http(self.plugin_url).call(
            "POST", "/token", basic=client,
            form={"grant_type": "password", "username": user, "password": USERS[user],
                  "scope": "sip"})
        if status != 200:
            raise Fail("password grant for %s via %s: %d %s" % (user, client[0], status, text))
        tok = json.loads(text).get("access_token")
        if not isinstance(tok, str) or not tok:
            raise Fail("password grant answer without access_token: %s" % text)
        return tok

    def introspect(self, token):
        status, text = Http(self.plugin_url).call(
            "POST", "/introspect", basic=(CLIENT_ID, CLIENT_SECRET),
            form={"token": token, "token_type_hint": "access_token"})
        if status != 200:
            raise Fail("introspection: %d %s" % (status, text))
        return json.loads(text)

    def revoke(self, token, client=(CLIENT_ID, CLIENT_SECRET)):
        status, text = Http(self.plugin_url).call(
            "POST", "/revoke", basic=client,
            form={"token": token, "token_type_hint": "access_token"})
        if status != 200:
            raise Fail("revocation: %d %s" % (status, text))


# --------------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------------

def register(port, user, headers):
    with SipClient(port, user=user, domain=DOMAIN) as c:
        _req, resp = c.request("REGISTER", headers=headers)
    return resp


def expect(resp, status, code, what):
    if resp.status != status or code_of(resp) != code:
        raise Fail("%s: expected %d with X-Auth-Code %s, got %d %s with X-Auth-Code %s"
                   % (what, status, code, resp.status, resp.reason, resp.get("X-Auth-Code")))


class State:
    token = None


def c_introspection_shape(gw, port, st):
    """What Glewlwyd answers: the user name must be in `username` (sub is opaque)."""
    st.token = gw.password_grant("alice")
    info = gw.introspect(st.token)
    print("     Glewlwyd introspection: %s" % json.dumps(info, sort_keys=True))
    if info.get("active") is not True:
        raise Fail("fresh token not active: %r" % info)
    if info.get("username") != "alice":
        raise Fail("introspection `username` is %r, not 'alice'" % info.get("username"))
    if not isinstance(info.get("exp"), int):
        raise Fail("introspection `exp` is not an integer: %r" % info.get("exp"))


def c_token_accepted(gw, port, st):
    resp = register(port, "alice", [("X-SSO-Token", st.token)])
    expect(resp, 200, 1, "REGISTER alice with X-SSO-Token")


def c_bearer_accepted(gw, port, st):
    resp = register(port, "alice", [("Authorization", "Bearer " + st.token)])
    expect(resp, 200, 1, "REGISTER alice with Authorization: Bearer")


def c_token_wrong_user(gw, port, st):
    resp = register(port, "bob", [("X-SSO-Token", st.token)])
    expect(resp, 401, -7, "REGISTER bob with alice's token")


def c_token_revoked(gw, port, st):
    gw.revoke(st.token)
    info = gw.introspect(st.token)
    if info.get("active") is not False:
        raise Fail("Glewlwyd still reports the revoked token active: %r" % info)
    resp = register(port, "alice", [("X-SSO-Token", st.token)])
    expect(resp, 401, -6, "REGISTER alice with the revoked token")


def c_token_of_other_client(gw, port, st):
    # Glewlwyd answers {"active":false} when the introspecting client is not the client
    # the token was issued to; the module sees an inactive token.
    tok = gw.password_grant("alice", client=(OTHER_CLIENT_ID, OTHER_CLIENT_SECRET))
    resp = register(port, "alice", [("X-SSO-Token", tok)])
    expect(resp, 401, -6, "REGISTER alice with a token issued to client %s" % OTHER_CLIENT_ID)


CASES = [
    ("glewlwyd_introspection_has_username", c_introspection_shape),
    ("glewlwyd_token_accepted", c_token_accepted),
    ("glewlwyd_token_as_bearer_accepted", c_bearer_accepted),
    ("glewlwyd_token_for_other_user_mismatch", c_token_wrong_user),
    ("glewlwyd_token_revoked_invalid", c_token_revoked),
    ("glewlwyd_token_of_other_client_invalid", c_token_of_other_client),
]


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------

def main():
    t_start = time.monotonic()
    binary = find_opensips()
    if binary is None:
        return skip("no OpenSIPS found (set OPENSIPS=/path/to/sbin/opensips)")
    module = os.environ.get("SSO_AUTH_MODULE") or str(REPO / "target/release/libsso_auth.so")
    mdir = find_modules_dir(binary)
    problems = []
    if not os.path.isfile(module):
        problems.append("sso_auth module not found at %s (build it or set SSO_AUTH_MODULE)"
                        % module)
    if not mdir:
        problems.append("stock OpenSIPS modules not found next to %s" % binary)
    if problems:
        for p in problems:
            print("GLEWLWYD ERROR: " + p)
        summary(0, len(CASES), 0)
        return 1

    gbin = find_glewlwyd()
    if gbin is None and os.environ.get("GLEWLWYD"):
        return skip("GLEWLWYD=%s is not an executable file" % os.environ["GLEWLWYD"])
    if gbin is None:
        if os.environ.get("SSO_E2E_INSTALL") != "1":
            return skip("glewlwyd is not installed (apt-get install glewlwyd, or set "
                        "SSO_E2E_INSTALL=1 to let this test install it)")
        try:
            gbin = install_glewlwyd()
        except SetupError as e:
            return skip(str(e))
    gmods = find_module_dir(gbin)
    if gmods is None:
        return skip("Glewlwyd's module directory (with plugin/libprotocol_oidc.so) not found")

    work = Path(tempfile.mkdtemp(prefix="sso-glewlwyd-"))
    if os.environ.get("E2E_KEEP") == "1":
        print("workdir (kept): %s" % work)
    gw = Glewlwyd(gbin, gmods, work)
    ctx = osips = None
    passed = failed = 0
    try:
        try:
            gw.start()
            gw.configure()
        except (SetupError, OSError) as e:
            return skip(str(e))
        print("Glewlwyd: %s (%s)" % (gw.url, gbin))

        ctx = Ctx(binary, mdir, module, work, int(os.environ.get("E2E_LOG_LEVEL", "3")))
        ctx.prepare_mpath()
        version = subprocess.run([binary, "-V"], capture_output=True, text=True, timeout=10)
        first = (version.stdout or version.stderr or "?").splitlines()[0]
        print("OpenSIPS: %s (%s)\nsso_auth: %s" % (binary, first, module))
        print("introspect_url: %s/introspect   client_id: %s" % (gw.plugin_url, CLIENT_ID),
              flush=True)
        # The e2e template sets introspect_url = <url>/introspect and token_url =
        # <url>/token (Glewlwyd's token endpoint; the Digest grant is not used here).
        target = SimpleNamespace(url=gw.plugin_url, client_id=CLIENT_ID,
                                 client_secret=CLIENT_SECRET)
        try:
            # cache_ttl 0: no positive cache, so the revoked token is asked about again
            osips = ctx.instance("opensips", sso=target, cache_ttl=0,
                                 http_timeout=HTTP_TIMEOUT_MS)
        except Exception as e:  # noqa: BLE001  (Fail, or a harness API change)
            print("FAIL startup of OpenSIPS: %s" % e)
            summary(0, len(CASES), 0)
            return 1
        port = osips.port

        st = State()
        for name, fn in CASES:
            t0 = time.monotonic()
            since = osips.log_size()
            try:
                fn(gw, port, st)
                passed += 1
                print("PASS %s (%.0f ms)" % (name, (time.monotonic() - t0) * 1000), flush=True)
            except Exception as e:  # noqa: BLE001
                failed += 1
                print("FAIL %s: %s" % (name, e), flush=True)
                if not isinstance(e, Fail):
                    traceback.print_exc()
                print("---- OpenSIPS log (tail) ----\n%s\n---- Glewlwyd log (tail) ----\n%s\n----"
                      % (osips.log_tail(20, since), gw.output_tail(10)), flush=True)
                if name == CASES[0][0] and st.token is None:
                    # no token, nothing else can run
                    rest = len(CASES) - 1
                    print("FAIL remaining %d cases: no access token from Glewlwyd" % rest)
                    failed += rest
                    break
    finally:
        if ctx is not None:
            ctx.stop_all()
        gw.stop()
        if os.environ.get("E2E_KEEP") != "1":
            shutil.rmtree(work, ignore_errors=True)
    print("time: %.1fs" % (time.monotonic() - t_start))
    summary(passed, failed, 0)
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        rc = main()
    except Exception:  # noqa: BLE001  (a bug here: still end with the summary line)
        traceback.print_exc()
        summary(0, len(CASES), 0)
        rc = 1
    sys.exit(rc)
