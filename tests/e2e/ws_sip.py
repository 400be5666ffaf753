"""A SIP client over WebSocket (RFC 7118 on RFC 6455), as a WebRTC softphone talks to
OpenSIPS's proto_ws: the HTTP Upgrade with the "sip" subprotocol, one SIP message per masked
text frame, Via SIP/2.0/WS with an .invalid host. Python standard library only."""

import base64
import hashlib
import os
import secrets
import socket
import struct
import time

from sip import SipClient, SipError, parse_message

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class WsError(Exception):
    pass


class WebSocket:
    """Client side of one RFC 6455 connection (text frames, ping answered, no extensions)."""

    def __init__(self, host, port, path="/", protocol="sip", timeout=5.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        # Origin: browsers always send it, and proto_ws refuses a handshake without one.
        req = ("GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
               "Origin: http://%s\r\n"
               "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: %s\r\n\r\n"
               % (path, host, port, key, host, protocol))
        self.sock.sendall(req.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise WsError("connection closed during the handshake")
            head += chunk
        head, self.buf = head.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        if not lines[0].startswith("HTTP/1.1 101"):
            raise WsError("handshake refused: %s" % lines[0])
        fields = {}
        for ln in lines[1:]:
            name, _, value = ln.partition(":")
            fields[name.strip().lower()] = value.strip()
        want = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        if fields.get("sec-websocket-accept") != want:
            raise WsError("bad Sec-WebSocket-Accept %r" % fields.get("sec-websocket-accept"))
        if fields.get("sec-websocket-protocol", "").lower() != protocol:
            raise WsError("server did not accept the %r subprotocol" % protocol)

    def send_frame(self, payload: bytes, opcode=1):
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 65536:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + body)

    def _read(self, n, deadline):
        while len(self.buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout()
            self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise WsError("connection closed")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv_message(self, timeout):
        """The next text or binary message (fragments joined); None on timeout."""
        deadline = time.monotonic() + timeout
        parts = []
        try:
            while True:
                b0, b1 = self._read(2, deadline)
                fin, opcode = b0 & 0x80, b0 & 0x0F
                n = b1 & 0x7F
                if n == 126:
                    n = struct.unpack("!H", self._read(2, deadline))[0]
                elif n == 127:
                    n = struct.unpack("!Q", self._read(8, deadline))[0]
                mask = self._read(4, deadline) if b1 & 0x80 else None
                data = self._read(n, deadline)
                if mask:
                    data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
                if opcode == 9:                 # ping
                    self.send_frame(data, opcode=10)
                    continue
                if opcode == 10:                # pong
                    continue
                if opcode == 8:                 # close
                    raise WsError("server closed the WebSocket")
                parts.append(data)
                if fin:
                    return b"".join(parts)
        except socket.timeout:
            return None

    def close(self):
        try:
            self.send_frame(b"\x03\xe8", opcode=8)
        except OSError:
            pass
        self.sock.close()


class WsSipClient(SipClient):
    """SipClient's requests and waits, carried over a WebSocket instead of UDP."""

    def __init__(self, port, host="127.0.0.1", user="alice", domain="example.com"):
        self.server = (host, port)
        self.ws = WebSocket(host, port)
        self.fake_host = secrets.token_hex(6) + ".invalid"
        self.local = ("127.0.0.1", self.ws.sock.getsockname()[1])
        self.user = user
        self.domain = domain
        self.call_id = "%s@%s" % (secrets.token_hex(10), self.fake_host)
        self.from_tag = secrets.token_hex(6)
        self.cseq = 0
        self.log = []

    def build(self, method, **kw):
        req = super().build(method, **kw)
        here = "%s:%d" % self.local
        text = req.data.decode("utf-8", "surrogateescape")
        text = text.replace("SIP/2.0/UDP %s;rport" % here, "SIP/2.0/WS %s" % self.fake_host, 1)
        text = text.replace("@%s>" % here, "@%s;transport=ws>" % self.fake_host)
        req.data = text.encode("utf-8", "surrogateescape")
        return req

    def send(self, req):
        req.sent_at = time.monotonic()
        self.ws.send_frame(req.data)
        self.log.append(("sent", req.data))

    def recv(self, timeout):
        try:
            data = self.ws.recv_message(max(timeout, 0.001))
        except (WsError, OSError) as e:
            raise SipError("WebSocket: %s" % e)
        if data is None:
            return None
        self.log.append(("recv", data))
        return parse_message(data)

    def close(self):
        self.ws.close()
