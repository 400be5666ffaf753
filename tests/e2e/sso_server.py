#!/usr/bin/env python3
"""Reference / test SSO server for the sso_auth OpenSIPS module.

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
import base64
import hashlib
import json
import secrets
import socket
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DIGEST_GRANT = "urn:sso-auth:grant-type:sip-digest"

DEFAULT_USERS = {"alice": "alicepw", "bob": "bobpw", "carol": "carolpw"}
DEFAULT_CLIENT_ID = "opensips"
DEFAULT_CLIENT_SECRET = "opensips-secret"

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
)


# --------------------------------------------------------------------------------------
# Digest maths (RFC 7616), shared with the SIP client of the test suite.
# --------------------------------------------------------------------------------------

def _sha512_256_fallback(data: bytes) -> str:
    """Pure-Python SHA-512/256 (FIPS 180-4), used when OpenSSL lacks it."""
    k = [
        0x428a2f98d728ae22, 0x7137449123ef65cd, 0xb5c0fbcfec4d3b2f, 0xe9b5dba58189dbbc,
        0x3956c25bf348b538, 0x59f111f1b605d019, 0x923f82a4af194f9b, 0xab1c5ed5da6d8118,
        0xd807aa98a3030242, 0x12835b0145706fbe, 0x243185be4ee4b28c, 0x550c7dc3d5ffb4e2,
        0x72be5d74f27b896f, 0x80deb1fe3b1696b1, 0x9bdc06a725c71235, 0xc19bf174cf692694,
        0xe49b69c19ef14ad2, 0xefbe4786384f25e3, 0x0fc19dc68b8cd5b5, 0x240ca1cc77ac9c65,
        0x2de92c6f592b0275, 0x4a7484aa6ea6e483, 0x5cb0a9dcbd41fbd4, 0x76f988da831153b5,
        0x983e5152ee66dfab, 0xa831c66d2db43210, 0xb00327c898fb213f, 0xbf597fc7beef0ee4,
        0xc6e00bf33da88fc2, 0xd5a79147930aa725, 0x06ca6351e003826f, 0x142929670a0e6e70,
        0x27b70a8546d22ffc, 0x2e1b21385c26c926, 0x4d2c6dfc5ac42aed, 0x53380d139d95b3df,
        0x650a73548baf63de, 0x766a0abb3c77b2a8, 0x81c2c92e47edaee6, 0x92722c851482353b,
        0xa2bfe8a14cf10364, 0xa81a664bbc423001, 0xc24b8b70d0f89791, 0xc76c51a30654be30,
        0xd192e819d6ef5218, 0xd69906245565a910, 0xf40e35855771202a, 0x106aa07032bbd1b8,
        0x19a4c116b8d2d0c8, 0x1e376c085141ab53, 0x2748774cdf8eeb99, 0x34b0bcb5e19b48a8,
        0x391c0cb3c5c95a63, 0x4ed8aa4ae3418acb, 0x5b9cca4f7763e373, 0x682e6ff3d6b2b8a3,
        0x748f82ee5defb2fc, 0x78a5636f43172f60, 0x84c87814a1f0ab72, 0x8cc702081a6439ec,
        0x90befffa23631e28, 0xa4506cebde82bde9, 0xbef9a3f7b2c67915, 0xc67178f2e372532b,
        0xca273eceea26619c, 0xd186b8c721c0c207, 0xeada7dd6cde0eb1e, 0xf57d4f7fee6ed178,
        0x06f067aa72176fba, 0x0a637dc5a2c898a6, 0x113f9804bef90dae, 0x1b710b35131c471b,
        0x28db77f523047d84, 0x32caab7b40c72493, 0x3c9ebe0a15c9bebc, 0x431d67c49c100d4c,
        0x4cc5d4becb3e42b6, 0x597f299cfc657e2a, 0x5fcb6fab3ad6faec, 0x6c44198c4a475817,
    ]
    h = [
        0x22312194fc2bf72c, 0x9f555fa3c84c64c2, 0x2393b86b6f53b151, 0x963877195940eabd,
        0x96283ee2a88effe3, 0xbe5e1e2553863992, 0x2b0199fc2c85b8aa, 0x0eb72ddc81c52ca2,
    ]
    mask = (1 << 64) - 1

    def rotr(x, n):
        return ((x >> n) | (x << (64 - n))) & mask

    msg = bytearray(data)
    bitlen = len(data) * 8
    msg.append(0x80)
    while len(msg) % 128 != 112:
        msg.append(0)
    msg += bitlen.to_bytes(16, "big")
    for off in range(0, len(msg), 128):
        w = [int.from_bytes(msg[off + 8 * i: off + 8 * i + 8], "big") for i in range(16)]
        for i in range(16, 80):
            s0 = rotr(w[i - 15], 1) ^ rotr(w[i - 15], 8) ^ (w[i - 15] >> 7)
            s1 = rotr(w[i - 2], 19) ^ rotr(w[i - 2], 61) ^ (w[i - 2] >> 6)
            w.append((w[i - 16] + s0 + w[i - 7] + s1) & mask)
        a, b, c, d, e, f, g, hh = h
        for i in range(80):
            s1 = rotr(e, 14) ^ rotr(e, 18) ^ rotr(e, 41)
            ch = (e & f) ^ (~e & g)
            t1 = (hh + s1 + ch + k[i] + w[i]) & mask
            s0 = rotr(a, 28) ^ rotr(a, 34) ^ rotr(a, 39)
            maj = (a & b) ^ (a & c) ^ (b & c)
            t2 = (s0 + maj) & mask
            hh, g, f, e, d, c, b, a = g, f, e, (d + t1) & mask, c, b, a, (t1 + t2) & mask
        h = [(x + y) & mask for x, y in zip(h, [a, b, c, d, e, f, g, hh])]
    return b"".join(x.to_bytes(8, "big") for x in h)[:32].hex()


def _sha512_256(data: bytes) -> str:
    try:
        return hashlib.new("sha512_256", data).hexdigest()
    except (ValueError, TypeError):
        return _sha512_256_fallback(data)


def base_algorithm(algorithm: str) -> str:
    """'SHA-256-sess' -> 'SHA-256'; case-insensitive; unknown -> ValueError."""
    a = (algorithm or "MD5").strip().upper()
    if a.endswith("-SESS"):
        a = a[:-5]
    if a not in ("MD5", "SHA-256", "SHA-512-256"):
        raise ValueError("unsupported Digest algorithm %r" % algorithm)
    return a


def digest_hash(algorithm: str, data) -> str:
    """Hex digest of `data` with the hash behind a Digest algorithm name."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    a = base_algorithm(algorithm)
    if a == "MD5":
        return hashlib.md5(data).hexdigest()
    if a == "SHA-256":
        return hashlib.sha256(data).hexdigest()
    return _sha512_256(data)


def digest_response(algorithm, username, realm, password, method, uri, nonce,
                    qop=None, nc=None, cnonce=None, body=None, body_hash=None, ha1=None):
    """RFC 7616 / RFC 3261 Digest response.

    qop: None/"" (RFC 2069 style), "auth" or "auth-int". For auth-int, give either the
    body (bytes) or its precomputed hex hash `body_hash`.
    """
    H = lambda s: digest_hash(algorithm, s)  # noqa: E731
    if ha1 is None:
        ha1 = H("%s:%s:%s" % (username, realm, password))
    if (algorithm or "").upper().endswith("-SESS"):
        ha1 = H("%s:%s:%s" % (ha1, nonce, cnonce))
    if qop == "auth-int":
        if body_hash is None:
            body_hash = digest_hash(algorithm, body or b"")
        ha2 = H("%s:%s:%s" % (method, uri, body_hash))
    else:
        ha2 = H("%s:%s" % (method, uri))
    if qop:
        return H("%s:%s:%s:%s:%s:%s" % (ha1, nonce, nc, cnonce, qop, ha2))
    return H("%s:%s:%s" % (ha1, nonce, ha2))


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
        auth = self.headers.get("Authorization") or ""
        if not auth.lower().startswith("basic "):
            return False
        try:
            raw = base64.b64decode(auth[6:].strip(), validate=True).decode()
        except Exception:  # noqa: BLE001
            return False
        cid, _, csec = raw.partition(":")
        cid = urllib.parse.unquote_plus(cid)
        csec = urllib.parse.unquote_plus(csec)
        return (secrets.compare_digest(cid, self.sso.client_id)
                and secrets.compare_digest(csec, self.sso.client_secret))

    def _introspect(self, form):
        tok = form.get("token", "")
        info = self.sso.tokens.get(tok)
        now = int(time.time())
        if not info or not info["active"]:
            self.sso._log("introspect %s -> inactive" % _short(tok))
            self._send(200, {"active": False})
            return
        if info["exp"] <= now and not info.get("report_as_is"):
            self.sso._log("introspect %s -> expired" % _short(tok))
            self._send(200, {"active": False})
            return
        out = {"active": True, "username": info["username"], "sub": "uid-" + info["username"],
               "exp": info["exp"], "scope": info.get("scope", "sip"),
               "client_id": self.sso.client_id, "token_type": "Bearer"}
        self.sso._log("introspect %s -> active user=%s" % (_short(tok), info["username"]))
        self._send(200, out)

    def _token(self, form):
        sso = self.sso
        if form.get("grant_type") != sso.grant_type:
            self._send(400, {"error": "unsupported_grant_type"})
            return
        need = ("username", "realm", "nonce", "uri", "response", "method")
        missing = [k for k in need if not form.get(k)]
        qop = form.get("qop") or None
        if qop:
            missing += [k for k in ("nc", "cnonce") if not form.get(k)]
            if qop == "auth-int" and not form.get("body_hash"):
                missing.append("body_hash")
        algorithm = form.get("algorithm") or "MD5"
        if missing:
            self._send(400, {"error": "invalid_request",
                             "error_description": "missing " + ",".join(missing)})
            return
        try:
            base_algorithm(algorithm)
        except ValueError:
            self._send(400, {"error": "invalid_request", "error_description": "algorithm"})
            return
        user = form["username"]
        pw = sso.users.get(user)
        if pw is None:
            sso._log("token user=%s -> unknown_user" % user)
            self._send(400, {"error": "unknown_user"})
            return
        expected = digest_response(algorithm, user, form["realm"], pw, form["method"],
                                   form["uri"], form["nonce"], qop, form.get("nc"),
                                   form.get("cnonce"), body_hash=form.get("body_hash"))
        if not secrets.compare_digest(expected, form["response"].lower()):
            sso._log("token user=%s alg=%s qop=%s -> invalid_grant" % (user, algorithm, qop))
            self._send(400, {"error": "invalid_grant",
                             "error_description": "Digest response mismatch"})
            return
        tok = sso.issue_token(user, sso.token_lifetime)
        sso._log("token user=%s alg=%s qop=%s -> issued %s" % (user, algorithm, qop, _short(tok)))
        self._send(200, {"access_token": tok, "token_type": "Bearer",
                         "expires_in": sso.token_lifetime})


def _short(tok: str) -> str:
    return (tok[:10] + "...") if len(tok) > 12 else tok


class SsoServer:
    """The test SSO. Attributes meant to be flipped by tests:

    mode            one of MODES (None = normal)
    users           {username: password}
    tokens          {token: {"username", "exp", "active", "scope", "report_as_is"}}
    client_id, client_secret, grant_type, token_lifetime
    delay           seconds to sit on every /introspect and /token request before answering
    counts          {"introspect": n, "token": n, ...}   (read with count())
    requests        list of (endpoint, form, headers) in arrival order
    """

    def __init__(self, port=0, host="127.0.0.1", users=None, client_id=DEFAULT_CLIENT_ID,
                 client_secret=DEFAULT_CLIENT_SECRET, verbose=False, tls=None):
        """tls: None for plain http, or (certfile, keyfile) to serve https."""
        self.host = host
        self.tls = tls
        self.delay = 0.0
        self.port = port
        self.users = dict(users or DEFAULT_USERS)
        self.client_id = client_id
        self.client_secret = client_secret
        self.grant_type = DIGEST_GRANT
        self.token_lifetime = 3600
        self.tokens = {}
        self.verbose = verbose
        self.counts = {}
        self.requests = []
        self._lock = threading.Lock()
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
    def issue_token(self, username, lifetime=3600, active=True, scope="sip",
                    report_as_is=False, token=None):
        tok = token or secrets.token_urlsafe(24)
        with self._lock:
            self.tokens[tok] = {"username": username, "exp": int(time.time()) + lifetime,
                                "active": active, "scope": scope,
                                "report_as_is": report_as_is}
        return tok

    def revoke(self, tok):
        with self._lock:
            if tok in self.tokens:
                self.tokens[tok]["active"] = False

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

    def _log(self, text):
        if self.verbose:
            print("[sso %s] %s" % (time.strftime("%H:%M:%S"), text), flush=True)


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
