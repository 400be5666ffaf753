#!/usr/bin/env python3
"""`make demo`: the whole sso_auth story against a real OpenSIPS, on loopback.

Installs the freshly built module into a scratch modules directory (a copy of the target
OpenSIPS's stock modules plus sso_auth.so), starts the reference SSO and OpenSIPS with
examples/opensips.cfg (only mpath, the listening ports and the SSO URLs are adapted), then plays:

  1. REGISTER without credentials          -> 401 with the Digest challenges
  2. REGISTER with Digest credentials      -> the SSO verifies them, opens a session:
                                              200 OK carrying X-SSO-Token
  3. REGISTER with that token              -> 200 OK (introspection)
  4. REGISTER with a bad token             -> 401 with Digest and Bearer error="invalid_token"

Python 3.11 standard library only.
"""

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "e2e"))

from sip import SipClient, digest_credentials  # noqa: E402
from sso_server import SsoServer  # noqa: E402

BOLD, DIM, GREEN, RED, RESET = ("\033[1m", "\033[2m", "\033[32m", "\033[31m", "\033[0m") \
    if sys.stdout.isatty() else ("",) * 5


def say(text):
    print(text, flush=True)


def find_opensips():
    path = os.environ.get("OPENSIPS") or shutil.which("opensips")
    if not path or not os.access(path, os.X_OK):
        say("No OpenSIPS found. Build or install one (3.4, 3.6 or 4.0), then run:")
        say("    OPENSIPS=/path/to/sbin/opensips make demo")
        sys.exit(2)
    return path


def stock_modules_dir(binary):
    prefix = Path(binary).resolve().parent.parent
    for sub in ("lib64/opensips/modules", "lib/opensips/modules",
                "lib/x86_64-linux-gnu/opensips/modules"):
        if (prefix / sub / "sl.so").exists():
            return prefix / sub
    env = os.environ.get("OPENSIPS_MODULES_DIR")
    if env:
        return Path(env)
    say("cannot find the stock modules next to %s; set OPENSIPS_MODULES_DIR" % binary)
    sys.exit(2)


def free_port(kind=socket.SOCK_DGRAM):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def render_example_cfg(mods, sip_port, ws_port, sso_url, log_level=None):
    """examples/opensips.cfg as it would run here: only mpath, the listening sockets, the SSO
    URLs and logging (stderr instead of syslog) are changed. Used by tests/e2e/phones.py too."""
    cfg = (REPO / "examples" / "opensips.cfg").read_text()
    cfg = re.sub(r'^mpath\s*=.*$', 'mpath = "%s/"' % mods, cfg, flags=re.M)
    cfg = re.sub(r'^socket\s*=\s*udp:.*$', "socket = udp:127.0.0.1:%d" % sip_port, cfg,
                 flags=re.M)
    cfg = re.sub(r'^socket\s*=\s*ws:.*$', "socket = ws:127.0.0.1:%d" % ws_port, cfg, flags=re.M)
    cfg = cfg.replace("http://127.0.0.1:8900", sso_url)
    cfg = re.sub(r'^syslog_enabled\s*=.*$', "syslog_enabled = no", cfg, flags=re.M)
    cfg = re.sub(r'^stderror_enabled\s*=.*$', "stderror_enabled = yes", cfg, flags=re.M)
    if log_level is not None:
        cfg = re.sub(r'^log_level\s*=.*$', "log_level = %d" % log_level, cfg, flags=re.M)
    return cfg


def show(resp, headers=("WWW-Authenticate", "X-SSO-Token")):
    colour = GREEN if resp.status == 200 else RED
    say("   <- %sSIP/2.0 %d %s%s" % (colour, resp.status, resp.reason, RESET))
    for name in headers:
        for value in resp.get_all(name):
            say("      %s: %s" % (name, value))


def main():
    binary = find_opensips()
    module = REPO / "target" / "sso_auth.so"
    if not module.exists():
        say("target/sso_auth.so is missing: run `make demo` (it builds first)")
        return 2
    work = Path(tempfile.mkdtemp(prefix="sso-auth-demo-"))
    mods = work / "modules"
    shutil.copytree(stock_modules_dir(binary), mods)
    shutil.copy(module, mods / "sso_auth.so")
    say("%s== installed sso_auth.so into the scratch modules dir %s%s" % (BOLD, mods, RESET))

    sso = SsoServer(port=0).start()
    say("%s== reference SSO on %s (users alice/alicepw, bob/bobpw)%s" % (BOLD, sso.url, RESET))

    sip_port = free_port()
    cfg = render_example_cfg(mods, sip_port, free_port(socket.SOCK_STREAM), sso.url)
    (work / "opensips.cfg").write_text(cfg)
    log = open(work / "opensips.log", "w")
    proc = subprocess.Popen([binary, "-F", "-f", str(work / "opensips.cfg")], stdout=log,
                            stderr=subprocess.STDOUT)
    say("%s== %s started with examples/opensips.cfg on udp:127.0.0.1:%d%s"
        % (BOLD, subprocess.run([binary, "-V"], capture_output=True, text=True).stdout
           .splitlines()[0], sip_port, RESET))
    ok = True
    try:
        time.sleep(1.5)
        if proc.poll() is not None:
            say(RED + "OpenSIPS exited at start-up; its log:" + RESET)
            say((work / "opensips.log").read_text()[-3000:])
            return 1
        c = SipClient(sip_port, user="alice", domain="example.com")

        say("\n%s1. REGISTER without credentials%s" % (BOLD, RESET))
        _, r = c.request("REGISTER")
        show(r)
        ok &= r.status == 401

        say("\n%s2. REGISTER with Digest credentials (alice/alicepw)%s" % (BOLD, RESET))
        digest = r.digest_challenges()[0]
        auth, _ = digest_credentials(digest, "REGISTER", "sip:example.com", "alice", "alicepw")
        _, r = c.request("REGISTER", headers=[("Authorization", auth)])
        show(r)
        token = r.get("X-SSO-Token")
        ok &= r.status == 200 and bool(token)

        say("\n%s3. REGISTER with the token from the 200 OK%s" % (BOLD, RESET))
        _, r = c.request("REGISTER", headers=[("X-SSO-Token", token or "none")])
        show(r)
        ok &= r.status == 200

        say("\n%s4. REGISTER with a bad token%s" % (BOLD, RESET))
        _, r = c.request("REGISTER", headers=[("X-SSO-Token", "not-a-valid-token")])
        show(r)
        ok &= r.status == 401 and any('invalid_token' in v for v in r.get_all("WWW-Authenticate"))

        say("\nSSO saw %d introspection(s) and %d Digest login(s)."
            % (sso.count("introspect"), sso.count("token")))
        say((GREEN + "demo OK" + RESET) if ok else (RED + "demo FAILED; log: %s" % (work / "opensips.log") + RESET))
        return 0 if ok else 1
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
        sso.stop()
        if ok:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
