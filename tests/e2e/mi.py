"""OpenSIPS Management Interface over mi_fifo, for the sso_auth end-to-end tests.

mi_fifo (OpenSIPS 3.x / 4.x) reads lines of the form

    :<reply fifo name>:<JSON-RPC request>

from its FIFO and writes the JSON-RPC answer into the named reply FIFO, which it looks for
in its `reply_dir`. The test creates that reply FIFO itself, opens it read-write (so the
open never blocks and no early EOF is seen before mi_fifo connects) and reads until the
bytes parse as one JSON document.

Python 3.11 standard library only.
"""

import json
import os
import secrets
import select
import time


class MiError(Exception):
    pass


def mi_call(fifo_path, reply_dir, method, params=None, timeout=5.0):
    """Run one MI command; returns the JSON-RPC `result` (raises MiError on an error)."""
    name = "mi_reply_%s" % secrets.token_hex(6)
    rpath = os.path.join(reply_dir, name)
    os.mkfifo(rpath, 0o600)
    rfd = None
    try:
        rfd = os.open(rpath, os.O_RDWR | os.O_NONBLOCK)
        req = {"jsonrpc": "2.0", "method": method, "id": secrets.token_hex(4)}
        if params is not None:
            req["params"] = params
        line = (":%s:%s\n" % (name, json.dumps(req))).encode()
        deadline = time.monotonic() + timeout
        # the MI process may still be creating its FIFO right after start-up
        while True:
            try:
                wfd = os.open(fifo_path, os.O_WRONLY | os.O_NONBLOCK)
                break
            except OSError as e:
                if time.monotonic() > deadline:
                    raise MiError("cannot open MI FIFO %s: %s" % (fifo_path, e))
                time.sleep(0.05)
        try:
            os.write(wfd, line)
        finally:
            os.close(wfd)
        buf = b""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise MiError("no MI answer to %s within %.1fs (got %r)"
                              % (method, timeout, buf[:200]))
            ready, _, _ = select.select([rfd], [], [], left)
            if not ready:
                continue
            try:
                chunk = os.read(rfd, 65536)
            except BlockingIOError:
                continue
            buf += chunk
            try:
                doc = json.loads(buf.decode("utf-8", "replace"))
            except ValueError:
                continue
            break
    finally:
        if rfd is not None:
            os.close(rfd)
        try:
            os.unlink(rpath)
        except OSError:
            pass
    if not isinstance(doc, dict):
        raise MiError("MI answer is not a JSON object: %r" % (doc,))
    if "error" in doc:
        raise MiError("MI %s failed: %r" % (method, doc["error"]))
    return doc.get("result")


def get_statistics(fifo_path, reply_dir, groups, timeout=5.0):
    """`get_statistics` for e.g. ["sso_auth:"]; returns {"group:name": int}."""
    res = mi_call(fifo_path, reply_dir, "get_statistics", {"statistics": list(groups)},
                  timeout)
    if not isinstance(res, dict):
        raise MiError("get_statistics answered %r" % (res,))
    out = {}
    for k, v in res.items():
        try:
            out[k] = int(v)
        except (TypeError, ValueError):
            out[k] = v
    return out
