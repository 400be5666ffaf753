#!/usr/bin/env python3
"""Test SSO server for the sso_auth OpenSIPS module: examples/reference_sso.py plus faults.

Implements the two HTTP endpoints sso_auth talks to:

  POST /introspect   RFC 7662 token introspection (HTTP Basic client auth)
  POST /token        "SIP Digest" grant: the server knows the user passwords, checks
                     the Digest response it is handed (RFC 7616 maths) and, when it is
                     right, issues a new bearer token that becomes introspectable.

The server runs in a background thread (ThreadingHTTPServer, HTTP/1.1 keep-alive), so a
test process can flip fault modes at runtime by setting attributes (`srv.mode = "hang"`),
read per-endpoint request counters and look at the last form received.

Standalone use (for a demo or a manual test):

    python3 tests/e2e/sso_server.py --port 8900

Python 3.11 standard library only.
"""

import argparse
import json
import secrets
import socket
import struct
import sys
import threading
import time
import urllib.parse
from pathlib import Path
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# The contract itself (Digest maths, users, tokens, the two endpoints) is the reference
# implementation shipped for operators; this file adds the test machinery around it.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent / "examples"))
from reference_sso import (DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_USERS,  # noqa: E402,F401
                           DIGEST_GRANT, ReferenceSso, _sha512_256_fallback, _short,
                           base_algorithm, digest_hash, digest_response)

# Fault modes understood by the server (None = behave).
MODES = (
    None,
    "refuse",            # listening socket closed, open connections dropped
    "hang",              # read the request, never answer
    "slow_headers",      # status line, then header bytes trickled forever
    "slow_body",         # full headers, then the body trickled forever
    "500",               # 500 with a JSON error body
    "302",               # redirect to an endpoint that would say "yes" (must not be followed)
    "garbage",           # 200 with a non-JSON body
    "wrong_types",       # 200 JSON with wrong member types ("active": "true", ...)
    "wrong_types_exp",   # introspection: "exp" as a string
    "huge",              # 200 valid JSON but > 64 KiB
    "close",             # read the request, close the connection without answering
    "reset",             # read the request, abort the connection (TCP RST, no answer)
)


# --------------------------------------------------------------------------------------
# Digest maths (RFC 7616), shared with the SIP client of the test suite.
# --------------------------------------------------------------------------------------

# --------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------

class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    disable_nagle_algorithm = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 64

    ssl_context = None

    def finish_request(self, request, client_address):
        # TLS handshake in the connection's own thread, so a client that fails or stalls
        # the handshake (the TLS test cases) never blocks the accept loop
        if self.ssl_context is not None:
            request.settimeout(10)
            try:
                request = self.ssl_context.wrap_socket(request, server_side=True)
            except OSError:
                self.sso._count("tls-handshake-failed", {}, {})
                return
            request.settimeout(None)
        super().finish_request(request, client_address)

    def handle_error(self, request, client_address):
        # peers (OpenSIPS workers being stopped, fault modes) drop connections: not news
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError, OSError)):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "sso-test/1.0"
    sys_version = ""

    # ---- plumbing -------------------------------------------------------------------
    @property
    def sso(self) -> "SsoServer":
        return self.server.sso

    def setup(self):
        super().setup()
        self.sso._track(self.connection, True)

    def finish(self):
        try:
            super().finish()
        finally:
            self.sso._track(self.connection, False)

    def log_message(self, fmt, *args):
        self.sso._log("%s %s" % (self.address_string(), fmt % args))

    def _read_body(self) -> bytes:
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            out = b""
            while True:
                line = self.rfile.readline(1024)
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    # trailers until the empty line
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                out += self.rfile.read(size)
                self.rfile.readline(16)
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def _send(self, code, obj=None, raw=None, ctype="application/json", extra=None):
        body = raw if raw is not None else json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        # headers and body in one segment (two small writes + Nagle + delayed ACK would
        # add ~40 ms to every answer)
        self._headers_buffer.append(b"\r\n")
        self._headers_buffer.append(body)
        self.flush_headers()

    def _trickle(self, data: bytes, release: threading.Event):
        """Write `data` one byte every 100 ms until written or released (max ~30 s)."""
        deadline = time.monotonic() + 30
        for i in range(len(data)):
            if release.is_set() or time.monotonic() > deadline:
                break
            try:
                self.wfile.write(data[i:i + 1])
                self.wfile.flush()
            except OSError:
                break
            release.wait(0.1)
        self.close_connection = True

    # ---- verbs ----------------------------------------------------------------------
    def do_GET(self):
        if self.path == "/health":
            self._send(200, {"ok": True, "counts": self.sso.counts_snapshot()})
        elif self.path == "/jwks":
            self.sso._count("jwks", {}, dict(self.headers.items()))
            if self.sso.jwks_delay:
                self.sso._release.wait(self.sso.jwks_delay)
            if self.sso.jwks is None:
                self._send(404, {"error": "not_found"})
            else:
                self._send(200, self.sso.jwks, ctype="application/jwk-set+json")
        else:
            self._send(404, {"error": "not_found"})

    def do_POST(self):
        path = urllib.parse.urlsplit(self.path).path
        body = self._read_body()
        try:
            form = {k: v[0] for k, v in urllib.parse.parse_qs(
                body.decode("utf-8", "replace"), keep_blank_values=True).items()}
        except Exception:  # noqa: BLE001
            form = {}
        endpoint = path.strip("/") or "/"
        sso = self.sso
        sso._count(endpoint, form, dict(self.headers.items()))

        mode = sso.mode
        release = sso._release
        if sso.delay and endpoint in ("introspect", "token"):
            release.wait(sso.delay)
        if mode is not None and endpoint in ("introspect", "token"):
            if self._fault(mode, endpoint, release):
                return

        if not self._client_ok():
            self._send(401, {"error": "invalid_client"},
                       extra={"WWW-Authenticate": 'Basic realm="sso-test"'})
            return
        if endpoint == "introspect":
            self._introspect(form)
        elif endpoint == "token":
            self._token(form)
        elif endpoint == "redirected-introspect":
            # Where the 302 points: says "active" to anything, so following it shows.
            self._send(200, {"active": True, "username": form.get("username", "alice"),
                             "exp": int(time.time()) + 3600, "scope": "sip"})
        elif endpoint == "redirected-token":
            self._send(200, {"access_token": "redirected-" + secrets.token_urlsafe(8),
                             "token_type": "Bearer", "expires_in": 3600})
        else:
            self._send(404, {"error": "not_found"})

    def _fault(self, mode, endpoint, release) -> bool:
        """Apply a fault mode; True when the request was (not) answered by it."""
        if mode == "hang":
            release.wait(30)
            self.close_connection = True
            return True
        if mode == "close":
            self.close_connection = True
            return True
        if mode == "reset":
            # linger 0: close() sends an RST instead of a FIN
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
            # closed here, before socketserver's shutdown(SHUT_WR) could send a FIN first
            self.connection.close()
            self.close_connection = True
            return True
        if mode == "slow_headers":
            self.wfile.write(b"HTTP/1.1 200 OK\r\n")
            self.wfile.flush()
            self._trickle(b"X-Slow: " + b"z" * 400 + b"\r\n\r\n", release)
            return True
        if mode == "slow_body":
            payload = json.dumps({"active": True, "username": "alice", "pad": "p" * 300}).encode()
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n" % len(payload))
            self.wfile.flush()
            self._trickle(payload, release)
            return True
        if mode == "500":
            self._send(500, {"error": "server_error"})
            return True
        if mode == "302":
            self._send(302, {"moved": True}, extra={
                "Location": "http://127.0.0.1:%d/redirected-%s" % (self.sso.port, endpoint)})
            return True
        if mode == "garbage":
            self._send(200, raw=b"<html><body>definitely not json{{{</body></html>",
                       ctype="text/html")
            return True
        if mode == "wrong_types":
            if endpoint == "introspect":
                obj = {"active": "true", "username": "alice",
                       "exp": int(time.time()) + 3600, "scope": "sip"}
            else:
                obj = {"access_token": 12345, "token_type": "Bearer", "expires_in": "3600"}
            self._send(200, obj)
            return True
        if mode == "wrong_types_exp":
            if endpoint == "introspect":
                obj = {"active": True, "username": "alice",
                       "exp": str(int(time.time()) + 3600), "scope": "sip"}
            else:
                obj = {"access_token": ["x"], "token_type": "Bearer", "expires_in": 3600}
            self._send(200, obj)
            return True
        if mode == "huge":
            if endpoint == "introspect":
                obj = {"active": True, "username": "alice",
                       "exp": int(time.time()) + 3600, "scope": "sip"}
            else:
                obj = {"access_token": "huge-" + secrets.token_urlsafe(8),
                       "token_type": "Bearer", "expires_in": 3600}
            obj["padding"] = "x" * (70 * 1024)
            self._send(200, obj)
            return True
        return False

    def _client_ok(self) -> bool:
        return self.sso.client_ok(self.headers.get("Authorization"))

    def _introspect(self, form):
        self._send(*self.sso.introspect(form))

    def _token(self, form):
        self._send(*self.sso.token(form))


class SsoServer(ReferenceSso):
    """The test SSO. Attributes meant to be flipped by tests:

    mode            one of MODES (None = normal)
    users           {username: password}
    tokens          {token: {"username", "exp", "active", "scope", "report_as_is"}}
    client_id, client_secret, grant_type, token_lifetime
    delay           seconds to sit on every /introspect and /token request before answering
    jwks            the JWK Set (a dict) served at GET /jwks; None answers 404
    jwks_delay      seconds to sit on every GET /jwks before answering
    counts          {"introspect": n, "token": n, ...}   (read with count())
    requests        list of (endpoint, form, headers) in arrival order
    """

    def __init__(self, port=0, host="127.0.0.1", users=None, client_id=DEFAULT_CLIENT_ID,
                 client_secret=DEFAULT_CLIENT_SECRET, verbose=False, tls=None):
        """tls: None for plain http, or (certfile, keyfile) to serve https."""
        self.host = host
        self.tls = tls
        self.delay = 0.0
        self.jwks = None        # the JWK Set served at GET /jwks (None: 404)
        self.jwks_delay = 0.0
        self.port = port
        ReferenceSso.__init__(self, users, client_id, client_secret, verbose)
        self.counts = {}
        self.requests = []
        self._conns = set()
        self._mode = None
        self._release = threading.Event()
        self._httpd = None
        self._thread = None

    # ---- lifecycle ------------------------------------------------------------------
    def start(self):
        self._listen()
        return self

    def _listen(self):
        self._httpd = _HTTPServer((self.host, self.port), _Handler)
        self._httpd.sso = self
        if self.tls:
            import ssl
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(self.tls[0], self.tls[1])
            self._httpd.ssl_context = ctx
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        name="sso-http", daemon=True)
        self._thread.start()

    def _unlisten(self):
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        self._httpd = None
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def stop(self):
        self.mode = None
        self._unlisten()

    @property
    def url(self):
        return "%s://%s:%d" % ("https" if self.tls else "http", self.host, self.port)

    # ---- modes ----------------------------------------------------------------------
    @property
    def mode(self):
        return self._mode

    @mode.setter
    def mode(self, value):
        if value not in MODES:
            raise ValueError("unknown mode %r" % (value,))
        old = self._mode
        if old == value:
            return
        # release whatever the previous mode keeps hanging
        self._release.set()
        self._release = threading.Event()
        self._mode = value
        if value == "refuse":
            self._unlisten()
        elif old == "refuse":
            self._listen()
        self._log("mode: %s -> %s" % (old, value))

    # ---- tokens / counters ----------------------------------------------------------
    def count(self, endpoint):
        with self._lock:
            return self.counts.get(endpoint, 0)

    def counts_snapshot(self):
        with self._lock:
            return dict(self.counts)

    def last(self, endpoint):
        """(form, headers) of the last request to `endpoint`, or (None, None)."""
        with self._lock:
            for ep, form, hdrs in reversed(self.requests):
                if ep == endpoint:
                    return form, hdrs
        return None, None

    def _count(self, endpoint, form, headers):
        with self._lock:
            self.counts[endpoint] = self.counts.get(endpoint, 0) + 1
            self.requests.append((endpoint, form, headers))
            if len(self.requests) > 1000:
                del self.requests[:500]

    def _track(self, conn, add):
        with self._lock:
            if add:
                self._conns.add(conn)
            else:
                self._conns.discard(conn)


def main(argv=None):
    ap = argparse.ArgumentParser(description="Test/reference SSO for the sso_auth OpenSIPS module")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8900)
    ap.add_argument("--client-id", default=DEFAULT_CLIENT_ID)
    ap.add_argument("--client-secret", default=DEFAULT_CLIENT_SECRET)
    ap.add_argument("--user", action="append", default=[], metavar="NAME:PASSWORD",
                    help="add a user (default users: alice/alicepw, bob/bobpw, carol/carolpw)")
    ap.add_argument("--token", action="append", default=[], metavar="TOKEN:USER",
                    help="pre-register an active bearer token for USER")
    ap.add_argument("--mode", choices=[m for m in MODES if m], default=None,
                    help="start in a fault mode")
    args = ap.parse_args(argv)

    users = dict(DEFAULT_USERS)
    for spec in args.user:
        name, _, pw = spec.partition(":")
        users[name] = pw
    srv = SsoServer(port=args.port, host=args.host, users=users, client_id=args.client_id,
                    client_secret=args.client_secret, verbose=True)
    srv.start()
    for spec in args.token:
        tok, _, user = spec.partition(":")
        srv.issue_token(user, 86400, token=tok)
    if args.mode:
        srv.mode = args.mode
    print("SSO test server listening on %s" % srv.url)
    print("  POST %s/introspect  (RFC 7662, HTTP Basic %s:%s)" % (srv.url, srv.client_id,
                                                                 srv.client_secret))
    print("  POST %s/token       (grant_type=%s)" % (srv.url, srv.grant_type))
    print("  users: %s" % ", ".join("%s/%s" % kv for kv in sorted(users.items())))
    for spec in args.token:
        print("  token: %s" % spec)
    print("Ctrl-C to stop.", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    srv.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
