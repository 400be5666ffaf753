"""Minimal UDP SIP user agent for the sso_auth end-to-end tests.

Builds REGISTER / INVITE / MESSAGE / OPTIONS requests, sends them to OpenSIPS, waits for
the final response (1xx are skipped), parses it (headers keep their order, repeated
headers are all kept), parses Digest/Bearer challenges and computes Digest credentials
for every RFC 7616 algorithm with qop auth / auth-int / none.

Every SipClient owns a fresh UDP socket, so two clients never share a source port.
Python 3.11 standard library only.
"""

import re
import secrets
import socket
import time

from sso_server import digest_hash, digest_response

COMPACT = {"v": "via", "f": "from", "t": "to", "i": "call-id", "m": "contact",
           "l": "content-length", "c": "content-type", "k": "supported", "s": "subject",
           "e": "content-encoding"}


class SipError(Exception):
    pass


# --------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------

class SipMessage:
    """A parsed SIP request or response."""

    def __init__(self, first_line, headers, body, raw):
        self.first_line = first_line
        self.headers = headers          # list of (name as received, value)
        self.body = body
        self.raw = raw
        self.status = None
        self.reason = None
        self.method = None
        self.uri = None
        parts = first_line.split(" ", 2)
        if first_line.startswith("SIP/2.0 "):
            self.status = int(parts[1])
            self.reason = parts[2] if len(parts) > 2 else ""
        else:
            self.method = parts[0]
            self.uri = parts[1] if len(parts) > 1 else ""

    @staticmethod
    def _norm(name):
        n = name.strip().lower()
        return COMPACT.get(n, n)

    def get_all(self, name):
        """All values of a header (case-insensitive, compact forms folded), in order."""
        want = self._norm(name)
        return [v for n, v in self.headers if self._norm(n) == want]

    def get(self, name, default=None):
        vals = self.get_all(name)
        return vals[0] if vals else default

    def has(self, name):
        return bool(self.get_all(name))

    def cseq(self):
        v = self.get("CSeq", "")
        p = v.split()
        return (int(p[0]), p[1]) if len(p) == 2 and p[0].isdigit() else (None, None)

    def challenges(self, header=None):
        """Parsed challenges from WWW-Authenticate or Proxy-Authenticate (auto by status)."""
        if header is None:
            header = "Proxy-Authenticate" if self.status == 407 else "WWW-Authenticate"
        out = []
        for v in self.get_all(header):
            out.extend(parse_challenges(v))
        return out

    def digest_challenges(self, header=None):
        return [c for c in self.challenges(header) if c.scheme.lower() == "digest"]

    def bearer_challenges(self, header=None):
        return [c for c in self.challenges(header) if c.scheme.lower() == "bearer"]

    def __str__(self):
        return self.raw.decode("utf-8", "replace")


def parse_message(data: bytes) -> SipMessage:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = data.partition(b"\n\n")
    lines = head.decode("utf-8", "replace").replace("\r\n", "\n").split("\n")
    if not lines or not lines[0]:
        raise SipError("empty message")
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        if line[0] in " \t" and headers:      # folded continuation line
            n, v = headers[-1]
            headers[-1] = (n, v + " " + line.strip())
            continue
        name, colon, value = line.partition(":")
        if not colon:
            raise SipError("bad header line %r" % line)
        headers.append((name.strip(), value.strip()))
    msg = SipMessage(lines[0].strip(), headers, body, data)
    cl = msg.get("Content-Length")
    if cl is not None and cl.strip().isdigit():
        msg.body = body[:int(cl)]
    return msg


class Challenge:
    def __init__(self, scheme, params, raw):
        self.scheme = scheme
        self.params = params    # keys lower-cased, values unquoted
        self.raw = raw

    def get(self, key, default=None):
        return self.params.get(key.lower(), default)

    @property
    def algorithm(self):
        return self.params.get("algorithm", "MD5")

    @property
    def qops(self):
        q = self.params.get("qop")
        if q is None:
            return []
        return [x.strip() for x in q.split(",") if x.strip()]

    def __repr__(self):
        return "Challenge(%s %r)" % (self.scheme, self.params)


_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_PARAM_RE = re.compile(r'\s*(' + _TOKEN + r')\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,]*)\s*')


def parse_challenges(value: str):
    """Parse one WWW-/Proxy-Authenticate value (may hold several challenges)."""
    out = []
    s = value
    pos = 0
    cur = None
    while pos < len(s):
        while pos < len(s) and s[pos] in " ,\t":
            pos += 1
        if pos >= len(s):
            break
        m = _PARAM_RE.match(s, pos)
        if m and cur is not None:
            v = m.group(2)
            if v.startswith('"'):
                v = re.sub(r"\\(.)", r"\1", v[1:-1])
            cur.params[m.group(1).lower()] = v
            pos = m.end()
            continue
        m = re.compile(_TOKEN).match(s, pos)
        if not m:
            raise SipError("cannot parse challenge %r at %d" % (value, pos))
        cur = Challenge(m.group(0), {}, value)
        out.append(cur)
        pos = m.end()
    return out


def parse_auth_params(value: str):
    """Parse an Authorization-style value: returns (scheme, {param: value})."""
    ch = parse_challenges(value)
    if not ch:
        raise SipError("empty credentials")
    return ch[0].scheme, ch[0].params


# --------------------------------------------------------------------------------------
# Digest credentials
# --------------------------------------------------------------------------------------

def _q(v):
    return '"%s"' % v.replace("\\", "\\\\").replace('"', '\\"')


def digest_credentials(challenge: Challenge, method: str, uri: str, username: str,
                       password: str, qop=None, body: bytes = b"", nc=1, cnonce=None,
                       nonce=None, realm=None, response=None):
    """Build the value of an Authorization / Proxy-Authorization Digest header.

    qop: None = pick from the challenge (auth-int if offered and a body is given, else
    auth, or none when the challenge has no qop); "" forces no qop; "auth"/"auth-int".
    nonce/realm/response let a test forge individual fields.
    Returns (header_value, info_dict).
    """
    realm = challenge.get("realm", "") if realm is None else realm
    nonce = challenge.get("nonce", "") if nonce is None else nonce
    algorithm = challenge.algorithm
    offered = challenge.qops
    if qop is None:
        if not offered:
            qop = ""
        elif "auth-int" in offered and (body or "auth" not in offered):
            qop = "auth-int"
        else:
            qop = "auth"
    ncs = "%08x" % nc
    if cnonce is None:
        cnonce = secrets.token_hex(8)
    resp = digest_response(algorithm, username, realm, password, method, uri, nonce,
                           qop or None, ncs, cnonce, body=body)
    if response is not None:
        resp = response
    parts = ["username=" + _q(username), "realm=" + _q(realm), "nonce=" + _q(nonce),
             "uri=" + _q(uri), "response=" + _q(resp), "algorithm=" + algorithm]
    if qop:
        parts += ["qop=" + qop, "nc=" + ncs, "cnonce=" + _q(cnonce)]
    if challenge.get("opaque") is not None:
        parts.append("opaque=" + _q(challenge.get("opaque")))
    info = {"algorithm": algorithm, "qop": qop, "nc": ncs, "cnonce": cnonce,
            "nonce": nonce, "realm": realm, "response": resp,
            "body_hash": digest_hash(algorithm, body) if qop == "auth-int" else None}
    return "Digest " + ", ".join(parts), info


# --------------------------------------------------------------------------------------
# The client
# --------------------------------------------------------------------------------------

class Request:
    def __init__(self, method, uri, headers, body, data, call_id, cseq, branch):
        self.method = method
        self.uri = uri
        self.headers = headers
        self.body = body
        self.data = data
        self.call_id = call_id
        self.cseq = cseq
        self.branch = branch
        self.sent_at = None


class SipClient:
    """One UDP socket talking to one SIP server."""

    def __init__(self, server_port, server_host="127.0.0.1", local_host="127.0.0.1",
                 user="alice", domain="example.com"):
        self.server = (server_host, server_port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((local_host, 0))
        self.local = self.sock.getsockname()
        self.user = user
        self.domain = domain
        self.call_id = "%s@%s" % (secrets.token_hex(10), local_host)
        self.from_tag = secrets.token_hex(6)
        self.cseq = 0
        self.log = []

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- building -------------------------------------------------------------------
    def build(self, method, uri=None, from_uri=None, to_uri=None, headers=(), body=b"",
              content_type=None, call_id=None, cseq=None, contact=True, expires=None):
        """Build a request; returns a Request (not sent)."""
        if isinstance(body, str):
            body = body.encode()
        from_uri = from_uri or "sip:%s@%s" % (self.user, self.domain)
        if to_uri is None:
            to_uri = from_uri if method == "REGISTER" else "sip:bob@%s" % self.domain
        if uri is None:
            uri = "sip:%s" % self.domain if method == "REGISTER" else to_uri
        if cseq is None:
            self.cseq += 1
            cseq = self.cseq
        call_id = call_id or self.call_id
        branch = "z9hG4bK" + secrets.token_hex(8)
        host, port = self.local
        hdrs = [
            ("Via", "SIP/2.0/UDP %s:%d;rport;branch=%s" % (host, port, branch)),
            ("Max-Forwards", "70"),
            ("From", "<%s>;tag=%s" % (from_uri, self.from_tag)),
            ("To", "<%s>" % to_uri),
            ("Call-ID", call_id),
            ("CSeq", "%d %s" % (cseq, method)),
        ]
        if contact and method in ("REGISTER", "INVITE", "OPTIONS", "SUBSCRIBE"):
            cuser = from_uri.split(":", 1)[1].split("@")[0] if "@" in from_uri else "ua"
            hdrs.append(("Contact", "<sip:%s@%s:%d>" % (cuser, host, port)))
        if expires is not None:
            hdrs.append(("Expires", str(expires)))
        hdrs.append(("User-Agent", "sso-auth-e2e/1.0"))
        hdrs.extend(headers)
        if body:
            hdrs.append(("Content-Type", content_type or (
                "application/sdp" if method == "INVITE" else "text/plain")))
        hdrs.append(("Content-Length", str(len(body))))
        text = "%s %s SIP/2.0\r\n" % (method, uri)
        text += "".join("%s: %s\r\n" % h for h in hdrs) + "\r\n"
        data = text.encode() + body
        return Request(method, uri, hdrs, body, data, call_id, cseq, branch)

    # ---- transport ------------------------------------------------------------------
    def send(self, req: Request):
        req.sent_at = time.monotonic()
        self.sock.sendto(req.data, self.server)
        self.log.append(("sent", req.data))

    def recv(self, timeout):
        """Receive one datagram (parsed) or None on timeout."""
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data, _addr = self.sock.recvfrom(65535)
        except socket.timeout:
            return None
        self.log.append(("recv", data))
        return parse_message(data)

    def wait_final(self, req: Request, timeout=5.0):
        """Wait for the final response to `req`; raises SipError on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise SipError("no final response to %s within %.1fs" % (req.method, timeout))
            msg = self.recv(left)
            if msg is None:
                continue
            if msg.status is None:
                continue        # a request sent to us; not what we wait for
            if msg.get("Call-ID") != req.call_id or msg.cseq() != (req.cseq, req.method):
                continue        # late answer to something older
            if msg.status < 200:
                continue
            msg.elapsed = time.monotonic() - (req.sent_at or time.monotonic())
            return msg

    def request(self, method, timeout=5.0, **kw):
        """Build, send, wait for the final response. Returns (Request, Response)."""
        req = self.build(method, **kw)
        self.send(req)
        return req, self.wait_final(req, timeout)

    def send_raw(self, data: bytes):
        self.sock.sendto(data, self.server)


class SipUas:
    """A bare UDP endpoint receiving what OpenSIPS relays, answering it."""

    def __init__(self, local_host="127.0.0.1"):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((local_host, 0))
        self.local = self.sock.getsockname()

    @property
    def hostport(self):
        return "%s:%d" % self.local

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def recv_request(self, timeout=3.0):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None, None
            self.sock.settimeout(left)
            try:
                data, addr = self.sock.recvfrom(65535)
            except socket.timeout:
                return None, None
            msg = parse_message(data)
            if msg.method:
                return msg, addr

    def reply(self, req: SipMessage, addr, status=200, reason="OK", headers=()):
        lines = ["SIP/2.0 %d %s" % (status, reason)]
        for n, v in req.headers:
            ln = SipMessage._norm(n)
            if ln in ("via", "from", "call-id", "cseq"):
                lines.append("%s: %s" % (n, v))
            elif ln == "to":
                lines.append("%s: %s%s" % (n, v, "" if "tag=" in v else ";tag=uas" +
                                           secrets.token_hex(4)))
        lines += ["%s: %s" % h for h in headers]
        lines.append("Content-Length: 0")
        self.sock.sendto(("\r\n".join(lines) + "\r\n\r\n").encode(), addr)


def random_token():
    return "tk-" + secrets.token_urlsafe(18)


__all__ = ["SipClient", "SipUas", "SipMessage", "Challenge", "SipError", "parse_message",
           "parse_challenges", "parse_auth_params", "digest_credentials", "random_token"]
