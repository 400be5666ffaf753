#!/usr/bin/env python3
"""Reference implementation of the SSO side of sso_auth's HTTP contract.

Stock SSO servers introspect tokens (RFC 7662) but do not verify SIP Digest credentials. This
file shows, in one small program, everything an SSO must do for sso_auth; run it as is for a
lab or a demo, or port the two handlers (`ReferenceSso.introspect`, `ReferenceSso.token`) to
your SSO. See README section 6 for the contract.

    POST /introspect   form: token, token_type_hint            -> RFC 7662 answer
    POST /token        form: grant_type=urn:sso-auth:grant-type:sip-digest, username, realm,
                             nonce, uri, response, algorithm, method
                             [, qop, nc, cnonce, opaque, body_hash]
                       -> 200 {"access_token", "token_type", "expires_in"} (a new session)
                          400 {"error": "invalid_grant"} (wrong response)
                          400 {"error": "unknown_user"}
    Both: HTTP Basic client authentication (client_id:client_secret, each form-urlencoded).

The server needs each user's password (or HA1 = H(user:realm:password) per algorithm) to
recompute the Digest response: Digest is a shared-secret scheme. Tokens it issues are random
and kept in memory with their user and expiry.

    python3 examples/reference_sso.py --port 8900 --user alice:alicepw --user bob:bobpw

Python 3.11 standard library only. Not hardened for production (no TLS, tokens in memory):
put the logic into your real SSO.
"""

import argparse
import base64
import hashlib
import json
import secrets
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DIGEST_GRANT = "urn:sso-auth:grant-type:sip-digest"
DEFAULT_USERS = {"alice": "alicepw", "bob": "bobpw", "carol": "carolpw"}
DEFAULT_CLIENT_ID = "opensips"
DEFAULT_CLIENT_SECRET = "opensips-secret"


# --------------------------------------------------------------------------------------
# Digest maths (RFC 7616)
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


def _short(tok: str) -> str:
    return (tok[:10] + "...") if len(tok) > 12 else tok


# --------------------------------------------------------------------------------------
# The contract
# --------------------------------------------------------------------------------------

class ReferenceSso:
    """State and decisions of the SSO: users, OpenSIPS's client credentials, issued tokens.

    tokens: {token: {"username", "exp", "active", "scope", "report_as_is", "claims"}}
    (report_as_is: answer with the stored exp even when it is past, to test the module's
    own exp check).
    user_claims: {username: {claim: value}}, added to the introspection answer of every
    token of that user (groups, roles, phone_number, ...); a token's own "claims" win.
    """

    def __init__(self, users=None, client_id=DEFAULT_CLIENT_ID,
                 client_secret=DEFAULT_CLIENT_SECRET, verbose=False):
        self.users = dict(users or DEFAULT_USERS)
        self.client_id = client_id
        self.client_secret = client_secret
        self.grant_type = DIGEST_GRANT
        self.token_lifetime = 3600
        self.tokens = {}
        self.user_claims = {}
        self.verbose = verbose
        self._lock = threading.Lock()

    def _log(self, text):
        if self.verbose:
            print("[sso %s] %s" % (time.strftime("%H:%M:%S"), text), flush=True)

    def issue_token(self, username, lifetime=3600, active=True, scope="sip",
                    report_as_is=False, token=None, claims=None):
        tok = token or secrets.token_urlsafe(24)
        with self._lock:
            self.tokens[tok] = {"username": username, "exp": int(time.time()) + lifetime,
                                "active": active, "scope": scope,
                                "report_as_is": report_as_is, "claims": dict(claims or {})}
        return tok

    def revoke(self, tok):
        with self._lock:
            if tok in self.tokens:
                self.tokens[tok]["active"] = False

    def client_ok(self, authorization) -> bool:
        """HTTP Basic client authentication, compared in constant time."""
        auth = authorization or ""
        if not auth.lower().startswith("basic "):
            return False
        try:
            raw = base64.b64decode(auth[6:].strip(), validate=True).decode()
        except Exception:  # noqa: BLE001
            return False
        cid, _, csec = raw.partition(":")
        cid = urllib.parse.unquote_plus(cid)
        csec = urllib.parse.unquote_plus(csec)
        return (secrets.compare_digest(cid, self.client_id)
                and secrets.compare_digest(csec, self.client_secret))

    def introspect(self, form):
        """RFC 7662: (status, JSON object) for a form {token, token_type_hint}."""
        tok = form.get("token", "")
        with self._lock:
            info = dict(self.tokens.get(tok) or {})
        now = int(time.time())
        if not info or not info["active"]:
            self._log("introspect %s -> inactive" % _short(tok))
            return 200, {"active": False}
        if info["exp"] <= now and not info.get("report_as_is"):
            self._log("introspect %s -> expired" % _short(tok))
            return 200, {"active": False}
        self._log("introspect %s -> active user=%s" % (_short(tok), info["username"]))
        answer = {"active": True, "username": info["username"],
                  "sub": "uid-" + info["username"], "exp": info["exp"],
                  "scope": info.get("scope", "sip"), "client_id": self.client_id,
                  "token_type": "Bearer"}
        with self._lock:
            answer.update(self.user_claims.get(info["username"], {}))
        answer.update(info.get("claims") or {})
        return 200, answer

    def token(self, form):
        """The Digest grant: verify the response, open a session, return a new token."""
        if form.get("grant_type") != self.grant_type:
            return 400, {"error": "unsupported_grant_type"}
        need = ("username", "realm", "nonce", "uri", "response", "method")
        missing = [k for k in need if not form.get(k)]
        qop = form.get("qop") or None
        if qop:
            missing += [k for k in ("nc", "cnonce") if not form.get(k)]
            if qop == "auth-int" and not form.get("body_hash"):
                missing.append("body_hash")
        algorithm = form.get("algorithm") or "MD5"
        if missing:
            return 400, {"error": "invalid_request",
                         "error_description": "missing " + ",".join(missing)}
        try:
            base_algorithm(algorithm)
        except ValueError:
            return 400, {"error": "invalid_request", "error_description": "algorithm"}
        user = form["username"]
        pw = self.users.get(user)
        if pw is None:
            self._log("token user=%s -> unknown_user" % user)
            return 400, {"error": "unknown_user"}
        expected = digest_response(algorithm, user, form["realm"], pw, form["method"],
                                   form["uri"], form["nonce"], qop, form.get("nc"),
                                   form.get("cnonce"), body_hash=form.get("body_hash"))
        if not secrets.compare_digest(expected, form["response"].lower()):
            self._log("token user=%s alg=%s qop=%s -> invalid_grant" % (user, algorithm, qop))
            return 400, {"error": "invalid_grant", "error_description": "Digest response mismatch"}
        tok = self.issue_token(user, self.token_lifetime)
        self._log("token user=%s alg=%s qop=%s -> issued %s" % (user, algorithm, qop, _short(tok)))
        return 200, {"access_token": tok, "token_type": "Bearer",
                     "expires_in": self.token_lifetime}


# --------------------------------------------------------------------------------------
# A minimal HTTP front end (the test server in tests/e2e adds fault injection)
# --------------------------------------------------------------------------------------

class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        self.server.sso._log("%s %s" % (self.address_string(), fmt % args))

    def _send(self, code, obj):
        body = json.dumps(obj).encode()
        head = ("HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                "Cache-Control: no-store\r\n\r\n" % (code, self.responses.get(code, ("",))[0],
                                                        len(body)))
        self.wfile.write(head.encode() + body)

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length > 65536:
            self._send(413, {"error": "invalid_request"})
            self.close_connection = True
            return
        form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode("utf-8", "replace")))
        sso = self.server.sso
        if not sso.client_ok(self.headers.get("Authorization")):
            self._send(401, {"error": "invalid_client"})
            return
        path = self.path.split("?")[0]
        if path == "/introspect":
            self._send(*sso.introspect(form))
        elif path == "/token":
            self._send(*sso.token(form))
        else:
            self._send(404, {"error": "not_found"})


def serve(sso, host="127.0.0.1", port=8900):
    httpd = ThreadingHTTPServer((host, port), _Handler)
    httpd.daemon_threads = True
    httpd.sso = sso
    return httpd


def main(argv=None):
    ap = argparse.ArgumentParser(description="Reference SSO for the sso_auth OpenSIPS module")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8900)
    ap.add_argument("--client-id", default=DEFAULT_CLIENT_ID)
    ap.add_argument("--client-secret", default=DEFAULT_CLIENT_SECRET)
    ap.add_argument("--user", action="append", default=[], metavar="NAME:PASSWORD",
                    help="a user (default: alice/alicepw, bob/bobpw, carol/carolpw)")
    ap.add_argument("--claims", action="append", default=[], metavar="NAME:JSON",
                    help='claims added to every token of a user, e.g. '
                         'alice:\'{"groups":["staff"],"phone_number":"+14255550101"}\'')
    args = ap.parse_args(argv)
    users = dict(u.split(":", 1) for u in args.user) if args.user else DEFAULT_USERS
    sso = ReferenceSso(users, args.client_id, args.client_secret, verbose=True)
    for item in args.claims:
        name, _, text = item.partition(":")
        sso.user_claims[name] = json.loads(text)
    httpd = serve(sso, args.host, args.port)
    print("reference SSO on http://%s:%d (POST /introspect, POST /token; client %s)"
          % (args.host, httpd.server_address[1], args.client_id), flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
