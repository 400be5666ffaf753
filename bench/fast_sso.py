#!/usr/bin/env python3
"""A lean SSO for the sso_auth benchmark.

Same HTTP contract as tests/e2e/sso_server.py (POST /introspect, POST /token, HTTP Basic
client authentication), but served by one single-threaded selectors loop with HTTP/1.1
keep-alive instead of a thread per connection, so that the SSO costs tens of microseconds
per answer and is not what the benchmark measures.

Differences from the test SSO, all on purpose:

* introspection: besides the tokens registered up front (--token TOKEN:USER), every token
  of the form `bench-<user>-<anything>` is active for <user>; no state is kept for them.
* /token verifies the Digest response with the very same function as the test SSO
  (digest_response imported from tests/e2e/sso_server.py) and answers with a token of that
  `bench-<user>-...` form, so that the token is introspectable without being stored.
* GET /stats returns the request counters (per endpoint, per registered token) and the
  server-side service time of every answer since the last GET /stats?reset=1
  (p50/p99/max in microseconds).
* no fault modes, but two knobs for the async scenarios (issue 11), settable at start
  (--delay-ms) or at runtime (GET /control?delay_ms=N&hang=0|1): `delay_ms` holds every
  POST answer N ms without holding the loop (answers wait in a timer heap, other requests
  keep being read and parsed, so N ms is the latency of every request however many are in
  flight), and `hang` never answers POSTs at all.

    python3 bench/fast_sso.py --port 0 --token sometoken:alice
    -> prints `LISTENING <port>` on stdout once it accepts connections.

Python 3.11 standard library only.
"""

import argparse
import heapq
import itertools
import json
import os
import secrets
import selectors
import signal
import socket
import sys
import time
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
from reference_sso import (DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET,  # noqa: E402
                           DEFAULT_USERS, ReferenceSso)

MAX_HEADER = 16 * 1024
MAX_BODY = 64 * 1024
TOKEN_LIFETIME = 3600


class Sso(ReferenceSso):
    """The reference SSO's Digest grant, with a leaner token store for load: issued tokens are
    not stored (their name says whose they are) and introspection accepts `bench-<user>-*`."""

    def __init__(self, users, client_id, client_secret, tokens):
        ReferenceSso.__init__(self, users, client_id, client_secret)
        self.token_lifetime = TOKEN_LIFETIME
        self.tokens = dict(tokens)                 # token -> user (active, long-lived)
        self.good_auth = set()                     # Authorization values already verified
        self.counts = {"introspect": 0, "token": 0, "other": 0}
        self.token_counts = {t: 0 for t in self.tokens}
        self.service_us = []                       # per-answer service time
        self.serial = itertools.count(1)
        self.started = time.time()
        self.delay_ms = 0.0
        self.hang = False

    # ---- client authentication ------------------------------------------------------
    def client_ok(self, auth):
        # Remember the few header values already verified: the check costs more than the
        # answer at bench rates.
        if auth in self.good_auth:
            return True
        ok = ReferenceSso.client_ok(self, auth)
        if ok and len(self.good_auth) < 16:
            self.good_auth.add(auth)
        return ok

    # ---- endpoints ------------------------------------------------------------------
    def introspect(self, form):
        tok = form.get("token", "")
        user = self.tokens.get(tok)
        if user is not None:
            self.token_counts[tok] += 1
        elif tok.startswith("bench-"):
            user = tok[6:].split("-", 1)[0] if "-" in tok[6:] else None
        if not user:
            return 200, {"active": False}
        return 200, {"active": True, "username": user, "sub": "uid-" + user,
                     "exp": int(time.time()) + TOKEN_LIFETIME, "scope": "sip",
                     "client_id": self.client_id, "token_type": "Bearer"}

    def issue_token(self, username, lifetime=TOKEN_LIFETIME, **_ignored):
        return "bench-%s-iss%d-%s" % (username, next(self.serial), secrets.token_hex(6))

    def stats(self, reset):
        s = sorted(self.service_us)
        pct = (lambda q: s[min(len(s) - 1, int(q * len(s)))] if s else None)  # noqa: E731
        out = {"counts": dict(self.counts), "token_counts": dict(self.token_counts),
               "answers": len(s), "service_us_p50": pct(0.50), "service_us_p99": pct(0.99),
               "service_us_max": s[-1] if s else None}
        if reset:
            self.service_us = []
        return out

    def handle(self, method, target, headers, body):
        """-> (status, json object)"""
        path, _, query = target.partition("?")
        if method == "GET" and path == "/stats":
            return 200, self.stats("reset=1" in query)
        if method == "GET" and path == "/health":
            return 200, {"ok": True}
        if method == "GET" and path == "/control":
            q = urllib.parse.parse_qs(query)
            if "delay_ms" in q:
                self.delay_ms = float(q["delay_ms"][0])
            if "hang" in q:
                self.hang = q["hang"][0] not in ("", "0")
            return 200, {"delay_ms": self.delay_ms, "hang": self.hang}
        if method != "POST":
            return 405, {"error": "method_not_allowed"}
        endpoint = path.strip("/")
        try:
            form = {k: v[0] for k, v in urllib.parse.parse_qs(
                body.decode("utf-8", "replace"), keep_blank_values=True).items()}
        except Exception:  # noqa: BLE001
            form = {}
        self.counts[endpoint if endpoint in self.counts else "other"] += 1
        if not self.client_ok(headers.get("authorization")):
            return 401, {"error": "invalid_client"}
        if endpoint == "introspect":
            return self.introspect(form)
        if endpoint == "token":
            return self.token(form)
        return 404, {"error": "not_found"}


REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
           405: "Method Not Allowed", 413: "Payload Too Large"}


def render(status, obj, close):
    body = json.dumps(obj, separators=(",", ":")).encode()
    head = ("HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
            "Cache-Control: no-store\r\n%s\r\n"
            % (status, REASONS.get(status, "Error"), len(body),
               "Connection: close\r\n" if close else ""))
    return head.encode() + body


class Conn:
    __slots__ = ("sock", "inbuf", "outbuf", "closing")

    def __init__(self, sock):
        self.sock = sock
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.closing = False


def parse_one(buf):
    """One complete request from the front of buf -> (consumed, method, target, headers,
    body, close) or None when more bytes are needed. Raises ValueError on garbage."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if len(buf) > MAX_HEADER:
            raise ValueError("header too large")
        return None
    lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise ValueError("bad request line")
    method, target, version = parts
    headers = {}
    for line in lines[1:]:
        k, sep, v = line.partition(":")
        if not sep:
            raise ValueError("bad header")
        headers[k.strip().lower()] = v.strip()
    pos = end + 4
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = bytearray()
        while True:
            nl = buf.find(b"\r\n", pos)
            if nl < 0:
                return None
            size = int(bytes(buf[pos:nl]).split(b";")[0].strip() or b"0", 16)
            pos = nl + 2
            if size == 0:
                # trailers up to the empty line
                while True:
                    nl = buf.find(b"\r\n", pos)
                    if nl < 0:
                        return None
                    empty = nl == pos
                    pos = nl + 2
                    if empty:
                        break
                break
            if len(buf) < pos + size + 2:
                return None
            body += buf[pos:pos + size]
            pos += size + 2
            if len(body) > MAX_BODY:
                raise ValueError("body too large")
        body = bytes(body)
    else:
        n = int(headers.get("content-length") or 0)
        if n > MAX_BODY:
            raise ValueError("body too large")
        if len(buf) < pos + n:
            return None
        body = bytes(buf[pos:pos + n])
        pos += n
    conn_hdr = headers.get("connection", "").lower()
    close = conn_hdr == "close" or (version == "HTTP/1.0" and conn_hdr != "keep-alive")
    return pos, method, target, headers, body, close


def serve(sso, lsock, stop_after=None):
    sel = selectors.DefaultSelector()
    lsock.setblocking(False)
    sel.register(lsock, selectors.EVENT_READ, None)
    deadline = time.monotonic() + stop_after if stop_after else None
    perf = time.perf_counter
    later = []              # (due, seq, conn, bytes): delayed answers, soonest first
    seq = itertools.count()

    def flush(c):
        """Write what c has queued; False when the connection is gone."""
        if c.outbuf:
            try:
                n = c.sock.send(c.outbuf)
                del c.outbuf[:n]
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                return False
        return True

    while True:
        now = time.monotonic()
        if deadline and now > deadline:
            return
        # release the delayed answers that are due, in order (a connection's answers keep
        # their order: they were queued with non-decreasing due times)
        while later and later[0][0] <= now:
            _due, _n, c, data = heapq.heappop(later)
            if c.sock.fileno() < 0:
                continue
            c.outbuf += data
            if not flush(c):
                sel.unregister(c.sock)
                c.sock.close()
                continue
            want = selectors.EVENT_READ | (selectors.EVENT_WRITE if c.outbuf else 0)
            sel.modify(c.sock, want, c)
        wait = 1.0 if not later else max(0.0, min(1.0, later[0][0] - time.monotonic()))
        for key, mask in sel.select(timeout=wait):
            if key.data is None:
                try:
                    s, _ = lsock.accept()
                except OSError:
                    continue
                s.setblocking(False)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sel.register(s, selectors.EVENT_READ, Conn(s))
                continue
            c = key.data
            if mask & selectors.EVENT_READ:
                try:
                    data = c.sock.recv(65536)
                except (BlockingIOError, InterruptedError):
                    data = None
                except OSError:
                    data = b""
                if data == b"":
                    sel.unregister(c.sock)
                    c.sock.close()
                    continue
                if data:
                    c.inbuf += data
                    while not c.closing:
                        try:
                            req = parse_one(c.inbuf)
                        except ValueError:
                            c.outbuf += render(400, {"error": "bad_request"}, True)
                            c.closing = True
                            break
                        if req is None:
                            break
                        used, method, target, headers, body, close = req
                        del c.inbuf[:used]
                        t0 = perf()
                        try:
                            status, obj = sso.handle(method, target, headers, body)
                        except Exception as e:  # noqa: BLE001
                            status, obj = 500, {"error": "server_error", "detail": str(e)}
                        if method == "POST" and sso.hang:
                            continue            # never answered
                        answer = render(status, obj, close)
                        if method == "POST" and sso.delay_ms > 0:
                            heapq.heappush(later, (time.monotonic() + sso.delay_ms / 1000,
                                                   next(seq), c, answer))
                            close = False       # closing now would drop the held answer
                        else:
                            c.outbuf += answer
                        if method == "POST":
                            # parse-to-rendered time of one SSO answer
                            sso.service_us.append(int((perf() - t0) * 1e6))
                        if close:
                            c.closing = True
            if not flush(c):
                sel.unregister(c.sock)
                c.sock.close()
                continue
            if not c.outbuf and c.closing:
                sel.unregister(c.sock)
                c.sock.close()
                continue
            want = selectors.EVENT_READ | (selectors.EVENT_WRITE if c.outbuf else 0)
            if key.events != want:
                sel.modify(c.sock, want, c)


def main(argv=None):
    ap = argparse.ArgumentParser(description="lean SSO for the sso_auth benchmark")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--client-id", default=DEFAULT_CLIENT_ID)
    ap.add_argument("--client-secret", default=DEFAULT_CLIENT_SECRET)
    ap.add_argument("--token", action="append", default=[], metavar="TOKEN:USER")
    ap.add_argument("--delay-ms", type=float, default=0,
                    help="hold every POST answer this long, without serializing requests")
    ap.add_argument("--max-seconds", type=float, default=3600,
                    help="exit after this long whatever happens (default 3600)")
    args = ap.parse_args(argv)
    tokens = {}
    for spec in args.token:
        tok, _, user = spec.rpartition(":")
        tokens[tok] = user
    sso = Sso(DEFAULT_USERS, args.client_id, args.client_secret, tokens)
    sso.delay_ms = args.delay_ms
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind((args.host, args.port))
    lsock.listen(256)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    print("LISTENING %d" % lsock.getsockname()[1], flush=True)
    try:
        serve(sso, lsock, stop_after=args.max_seconds)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
