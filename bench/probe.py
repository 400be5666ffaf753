"""Latency probe for the sso_auth benchmark.

sipp measures response times with the kernel's coarse clock (4 ms steps on this kind of
machine), too coarse for sub-millisecond answers. While sipp carries the load, this probe
runs the same exchange as the scenario at a low fixed rate (50 exchanges/s by default) from
its own UDP socket and times each one with time.perf_counter(): its requests wait in the
same queues as sipp's, so its percentiles are those of the loaded server, sampled.

One exchange = one REGISTER answered 200 (kinds "plain", "token", "token_per_call"), or
REGISTER -> 401 -> REGISTER with Digest -> 200 (kinds "digest_sso", "digest_native").
A lost or wrong answer counts as a failure (no retransmission: on loopback a lost datagram
means a full socket buffer, i.e. overload).

Python 3.11 standard library only.
"""

import re
import secrets
import socket
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "e2e"))
from sso_server import digest_response  # noqa: E402

ANSWER_TIMEOUT = 2.0


def _parse_params(s):
    """key=value / key="value" list of an auth header -> dict (keys lower case)."""
    out = {}
    for m in re.finditer(r'([A-Za-z0-9_-]+)\s*=\s*("((?:[^"\\]|\\.)*)"|[^\s,]+)', s):
        out[m.group(1).lower()] = m.group(3) if m.group(3) is not None else m.group(2)
    return out


class Probe(threading.Thread):
    def __init__(self, port, kind, user="alice", password="alicepw", domain="example.com",
                 token=None, rate=50.0, token_header="X-SSO-Token"):
        super().__init__(name="probe", daemon=True)
        self.port = port
        self.kind = kind
        self.user, self.password, self.domain = user, password, domain
        self.token = token
        self.token_header = token_header
        self.interval = 1.0 / rate
        self.stop_ev = threading.Event()
        self.lat = []            # whole exchange, ms
        self.lat_auth = []       # the authenticated REGISTER alone (digest kinds), ms
        self.failures = 0
        self.fail_reasons = {}
        self.tag = secrets.token_hex(4)
        self.n = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.lport = self.sock.getsockname()[1]

    # ---- SIP plumbing -----------------------------------------------------------------
    def _request(self, call_id, cseq, extra):
        branch = "z9hG4bK" + secrets.token_hex(8)
        return ("REGISTER sip:%s SIP/2.0\r\n"
                "Via: SIP/2.0/UDP 127.0.0.1:%d;branch=%s;rport\r\n"
                "Max-Forwards: 70\r\n"
                "From: <sip:%s@%s>;tag=%s\r\n"
                "To: <sip:%s@%s>\r\n"
                "Call-ID: %s\r\n"
                "CSeq: %d REGISTER\r\n"
                "Contact: <sip:%s@127.0.0.1:%d>\r\n"
                "Expires: 3600\r\n"
                "%s"
                "Content-Length: 0\r\n\r\n"
                % (self.domain, self.lport, branch, self.user, self.domain, self.tag,
                   self.user, self.domain, call_id, cseq, self.user, self.lport,
                   "".join("%s: %s\r\n" % kv for kv in extra))).encode()

    def _transact(self, data, call_id, cseq):
        """Send; wait for the final answer of (call_id, cseq). -> (status, headers list)"""
        self.sock.sendto(data, ("127.0.0.1", self.port))
        deadline = time.perf_counter() + ANSWER_TIMEOUT
        want_cseq = "%d REGISTER" % cseq
        while True:
            left = deadline - time.perf_counter()
            if left <= 0:
                return None, []
            self.sock.settimeout(left)
            try:
                raw, _ = self.sock.recvfrom(65535)
            except socket.timeout:
                return None, []
            text = raw.decode("utf-8", "replace")
            head = text.split("\r\n\r\n", 1)[0].split("\r\n")
            if not head or not head[0].startswith("SIP/2.0 "):
                continue
            hdrs = []
            for line in head[1:]:
                k, _, v = line.partition(":")
                hdrs.append((k.strip().lower(), v.strip()))
            d = dict(hdrs)
            if d.get("call-id") != call_id or d.get("cseq") != want_cseq:
                continue          # a late answer to an earlier exchange
            try:
                status = int(head[0].split(" ", 2)[1])
            except (IndexError, ValueError):
                continue
            if status < 200:
                continue
            return status, hdrs

    def _fail(self, why):
        self.failures += 1
        self.fail_reasons[why] = self.fail_reasons.get(why, 0) + 1

    # ---- one exchange -----------------------------------------------------------------
    def exchange(self):
        self.n += 1
        call_id = "probe-%s-%d" % (self.tag, self.n)
        extra = []
        if self.kind == "token":
            extra.append((self.token_header, self.token))
        elif self.kind == "token_per_call":
            extra.append((self.token_header, "bench-%s-probe%s-%d" % (self.user, self.tag,
                                                                       self.n)))
        t0 = time.perf_counter()
        status, hdrs = self._transact(self._request(call_id, 1, extra), call_id, 1)
        if self.kind in ("plain", "token", "token_per_call"):
            if status == 200:
                self.lat.append((time.perf_counter() - t0) * 1000)
            else:
                self._fail("no answer" if status is None else str(status))
            return
        if status != 401:
            self._fail("first: %s" % ("no answer" if status is None else status))
            return
        chal = None
        for k, v in hdrs:
            if k == "www-authenticate" and v.lower().startswith("digest "):
                chal = _parse_params(v[7:])
                break
        if not chal or "nonce" not in chal:
            self._fail("401 without a Digest challenge")
            return
        alg = chal.get("algorithm", "MD5")
        qops = [q.strip() for q in chal.get("qop", "").split(",") if q.strip()]
        qop = "auth" if "auth" in qops else None
        uri = "sip:%s" % self.domain
        cnonce = secrets.token_hex(8)
        nc = "00000001"
        resp = digest_response(alg, self.user, chal.get("realm", ""), self.password,
                               "REGISTER", uri, chal["nonce"], qop, nc, cnonce)
        parts = ['username="%s"' % self.user, 'realm="%s"' % chal.get("realm", ""),
                 'nonce="%s"' % chal["nonce"], 'uri="%s"' % uri, 'response="%s"' % resp,
                 "algorithm=%s" % alg]
        if qop:
            parts += ["qop=%s" % qop, "nc=%s" % nc, 'cnonce="%s"' % cnonce]
        if "opaque" in chal:
            parts.append('opaque="%s"' % chal["opaque"])
        t1 = time.perf_counter()
        status, hdrs = self._transact(
            self._request(call_id, 2, [("Authorization", "Digest " + ", ".join(parts))]),
            call_id, 2)
        t2 = time.perf_counter()
        if status != 200:
            self._fail("second: %s" % ("no answer" if status is None else status))
            return
        if self.kind == "digest_sso" and not any(k == self.token_header.lower() and v
                                                 for k, v in hdrs):
            self._fail("200 without %s" % self.token_header)
            return
        self.lat.append((t2 - t0) * 1000)
        self.lat_auth.append((t2 - t1) * 1000)

    def run(self):
        nxt = time.perf_counter()
        while not self.stop_ev.is_set():
            try:
                self.exchange()
            except OSError as e:
                self._fail("socket: %s" % e)
            nxt += self.interval
            delay = nxt - time.perf_counter()
            if delay > 0:
                self.stop_ev.wait(delay)
            else:
                nxt = time.perf_counter()

    def stop(self):
        self.stop_ev.set()
        self.join(timeout=2 * ANSWER_TIMEOUT + 1)
        self.sock.close()
