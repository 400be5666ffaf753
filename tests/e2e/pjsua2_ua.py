#!/usr/bin/env python3
"""A PJSUA2 (pjproject) softphone driven headless, for tests/e2e/phones.py.

    python3 pjsua2_ua.py --proxy 127.0.0.1:5060 --user alice --password alicepw \
        --domain example.com --callee sip:bob@example.com

Steps: REGISTER with Digest, a call to --callee (held 0.5 s, then BYE), un-REGISTER, REGISTER
again with the X-SSO-Token the first 200 OK carried and no password at all (only the token can
make it succeed), un-REGISTER with the token. Prints one JSON object per line (`{"step": ...,
"ok": ...}`) and exits 0 when every step passed.

Runs without threads or audio hardware: the null sound device, threadCnt = 0 and this script
calling libHandleEvents; call objects are deleted before libDestroy.
"""

import argparse
import hashlib
import json
import re
import sys
import time

import pjsua2 as pj


def say(**kw):
    print(json.dumps(kw), flush=True)


class Account(pj.Account):
    def __init__(self):
        super().__init__()
        self.reg_code = None
        self.reg_expires = None
        self.token = None

    def onRegState(self, prm):
        self.reg_code = prm.code
        self.reg_expires = prm.expiration
        m = re.search(r"^X-SSO-Token:\s*(\S+)", prm.rdata.wholeMsg or "", re.M | re.I)
        if m and prm.code == 200:
            self.token = m.group(1)


class Call(pj.Call):
    def __init__(self, acc):
        super().__init__(acc)
        self.state = None
        self.last_code = None

    def onCallState(self, prm):
        info = self.getInfo()
        self.state = info.state
        self.last_code = info.lastStatusCode


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--proxy", required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--domain", required=True)
    ap.add_argument("--callee", required=True)
    ap.add_argument("--log-level", type=int, default=1)
    ap.add_argument("--register-only", type=float, metavar="SECONDS",
                    help="only REGISTER, wait SECONDS (the nonce goes stale), un-REGISTER")
    args = ap.parse_args()

    ep = pj.Endpoint()
    ep.libCreate()
    cfg = pj.EpConfig()
    cfg.uaConfig.threadCnt = 0
    cfg.uaConfig.mainThreadOnly = True
    cfg.uaConfig.userAgent = "pjsua2-e2e"
    cfg.logConfig.level = args.log_level
    cfg.logConfig.consoleLevel = args.log_level
    cfg.medConfig.noVad = True
    ep.libInit(cfg)
    tcfg = pj.TransportConfig()
    tcfg.port = 0
    tcfg.boundAddress = "127.0.0.1"
    tcfg.publicAddress = "127.0.0.1"
    ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tcfg)
    ep.libStart()
    ep.audDevManager().setNullDev()

    def pump(cond, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ep.libHandleEvents(20)
            if cond():
                return True
        return cond()

    acfg = pj.AccountConfig()
    acfg.idUri = "sip:%s@%s" % (args.user, args.domain)
    acfg.regConfig.registrarUri = "sip:%s" % args.domain
    acfg.regConfig.timeoutSec = 300
    acfg.regConfig.retryIntervalSec = 0
    acfg.sipConfig.proxies.append("sip:%s;lr" % args.proxy)
    acfg.sipConfig.authCreds.append(pj.AuthCredInfo("digest", "*", args.user, 0, args.password))
    acfg.natConfig.contactRewriteUse = 0
    acfg.natConfig.viaRewriteUse = 0
    acfg.natConfig.sdpNatRewriteUse = 0
    acfg.natConfig.sipOutboundUse = 0
    acfg.natConfig.iceEnabled = False
    acfg.mediaConfig.srtpUse = pj.PJMEDIA_SRTP_DISABLED

    ok = True
    acc = Account()
    call = None
    try:
        acc.create(acfg)
        pump(lambda: acc.reg_code is not None, 6)
        good = acc.reg_code == 200 and bool(acc.token)
        # the token's SHA-256 (never the token), so the test can find it at the SSO
        digest = hashlib.sha256(acc.token.encode()).hexdigest() if acc.token else None
        say(step="register", ok=good, code=acc.reg_code, token_sha256=digest)
        ok &= good

        if args.register_only is not None:
            pump(lambda: False, args.register_only)
            acc.reg_code = None
            acc.setRegistration(False)
            pump(lambda: acc.reg_code is not None, 6)
            good = acc.reg_code == 200
            say(step="unregister", ok=good, code=acc.reg_code)
            return 0 if ok and good else 1

        call = Call(acc)
        prm = pj.CallOpParam(True)
        call.makeCall(args.callee, prm)
        pump(lambda: call.state in (pj.PJSIP_INV_STATE_CONFIRMED,
                                    pj.PJSIP_INV_STATE_DISCONNECTED), 8)
        good = call.state == pj.PJSIP_INV_STATE_CONFIRMED
        say(step="call", ok=good, code=call.last_code)
        ok &= good
        if good:
            pump(lambda: False, 0.5)
            call.hangup(pj.CallOpParam(True))
            pump(lambda: call.state == pj.PJSIP_INV_STATE_DISCONNECTED, 5)
            good = call.state == pj.PJSIP_INV_STATE_DISCONNECTED
            say(step="hangup", ok=good, code=call.last_code)
            ok &= good

        acc.reg_code = None
        acc.setRegistration(False)
        pump(lambda: acc.reg_code is not None, 6)
        good = acc.reg_code == 200
        say(step="unregister", ok=good, code=acc.reg_code)
        ok &= good

        # The seed story with a real client library: the token from the last 200 OK (the
        # Digest un-REGISTER was a login too), in a header, and no password to fall back on.
        token = acc.token
        acc.token = None
        acfg.sipConfig.authCreds.clear()
        hdr = pj.SipHeader()
        hdr.hName = "X-SSO-Token"
        hdr.hValue = token or "none"
        acfg.regConfig.headers.append(hdr)
        acc.reg_code = None
        acc.modify(acfg)
        pump(lambda: acc.reg_code is not None, 6)
        good = acc.reg_code == 200
        digest = hashlib.sha256(token.encode()).hexdigest() if token else None
        say(step="register_token", ok=good, code=acc.reg_code, token_sha256=digest)
        ok &= good

        acc.reg_code = None
        acc.setRegistration(False)
        pump(lambda: acc.reg_code is not None, 6)
        good = acc.reg_code == 200
        say(step="unregister_token", ok=good, code=acc.reg_code)
        ok &= good
    except pj.Error as e:
        say(step="error", ok=False, info=e.info())
        ok = False
    finally:
        # Call objects go before the library.
        del call
        acc.shutdown()
        del acc
        pump(lambda: False, 0.2)
        ep.libDestroy()
        del ep
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
