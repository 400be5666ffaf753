"""End-to-end cases for the security review (issue 14) and nonces bound to their node
(issue 13 item 1): each finding seen from SIP, against a real OpenSIPS.
Registered into tests/e2e/run.py's case list by `register(run)`.
"""

import copy
import os
import socket
import subprocess
import time


def register(r):
    """Adds this file's cases to the runner `r` (the tests/e2e/run.py module)."""
    case, check, eq, expect = r.case, r.check, r.eq, r.expect
    client, DOMAIN = r.client, r.DOMAIN
    challenge_for, digest_request = r.challenge_for, r.digest_request

    def auth(v):
        return [("Authorization", v)]

    def nonce_param(p):
        return 'modparam("sso_auth", "%s", "%s")\n' % p

    # ---- replay and nonces -----------------------------------------------------------

    @case("sec_nc_without_qop_is_single_use")
    def t_nc_no_qop(ctx):
        """Item 1: an answer without qop does not cover nc: sending it again with another nc
        must not open another SSO session."""
        uri = "sip:" + DOMAIN
        with client(ctx) as c:
            _r, ds = challenge_for(c, qop="none")
            v = r.digest_value(ds[0], uri, qop="")
            n = ctx.sso.count("token")
            answers = []
            for nc in ("00000001", "00000002", "00000003"):
                _q, resp = c.request("REGISTER", headers=auth(
                    v + ', nc=%s, cnonce="0a4f113b"' % nc) + [("X-Test-Qop", "none")])
                answers.append(resp)
        expect(answers[0], 200, 2, "first use")
        form, _h = ctx.sso.last("token")
        check(not form.get("nc") and not form.get("cnonce"),
              "/token got nc/cnonce without qop: %r" % form)
        for resp in answers[1:]:
            expect(resp, 401, -8, "same qop-less answer with another nc")
        eq(ctx.sso.count("token") - n, 1, "/token calls")

    r.INSTANCES["secfull"] = lambda ctx: dict(
        udp_workers=2, nonce_expire=6, params='modparam("sso_auth", "nonce_slots", 64)\n')

    @case("sec_full_replay_table_admits_nothing_later", instance="secfull")
    def t_full_table(ctx):
        """Item 2: a header refused because the replay table was full (-3) is still refused
        once room is back: flooding the table lets nothing through."""
        uri = "sip:" + DOMAIN
        t0 = time.monotonic()
        # Fill the table: every answered nonce takes a slot until it expires (wrong
        # passwords are enough, the slot is taken before the SSO is asked).
        with client(ctx, instance="secfull") as c:
            for _ in range(200):
                _r, ds = challenge_for(c)
                _q, resp = c.request("REGISTER", headers=auth(
                    r.digest_value(ds[0], uri, password="wrong")))
                if r.code_of(resp) == -3:
                    break
                eq(r.code_of(resp), -2, "filling answer")
            else:
                raise r.Fail("the 64-slot replay table never filled")
        # Later nonces, answered right, until one is refused for lack of room.
        time.sleep(max(0.0, 2.5 - (time.monotonic() - t0)))
        captured = None
        with client(ctx, instance="secfull") as c:
            for _ in range(200):
                _r, ds = challenge_for(c)
                v = r.digest_value(ds[0], uri)
                _q, resp = c.request("REGISTER", headers=auth(v))
                if r.code_of(resp) == -3:
                    captured = v
                    eq((resp.digest_challenges()[0].get("stale") or "").lower(), "true",
                       "stale flag after a full table")
                    break
                expect(resp, 200, 2, "victim login with room left")
        check(captured, "no answer was refused by the full table")
        # The filling nonces expire (6 s + 1) while the captured one is still valid.
        time.sleep(max(0.0, 7.6 - (time.monotonic() - t0)))
        n = ctx.sso.count("token")
        with client(ctx, instance="secfull") as c:
            _q, resp = c.request("REGISTER", headers=auth(captured))
        expect(resp, 401, -3, "captured header once room is back")
        eq(ctx.sso.count("token") - n, 0, "/token calls for the captured header")
        r.digest_login(ctx, "alice", instance="secfull")

    r.INSTANCES["secrestart"] = lambda ctx: dict(udp_workers=2)

    @case("sec_header_from_before_a_restart_is_stale", instance="secrestart")
    def t_restart(ctx):
        """Item 3: same secret, OpenSIPS restarted: a header accepted before the restart is
        answered with a stale challenge after it, not with a second SSO session."""
        inst = ctx.instance("secrestart")
        with client(ctx, instance="secrestart") as c:
            _r, ds = challenge_for(c)
            req, resp, _info = digest_request(c, "REGISTER", "alicepw", ds[0])
        expect(resp, 200, 2, "login before the restart")
        hdr = [h for h in req.headers if h[0] == "Authorization"]
        inst.stop()
        inst.start(inst.port)
        inst.wait_ready()
        n = ctx.sso.count("token")
        with client(ctx, instance="secrestart") as c:
            _q, resp = c.request("REGISTER", headers=hdr)
            expect(resp, 401, -3, "the same header after the restart")
            new = resp.digest_challenges()
            eq((new[0].get("stale") or "").lower(), "true", "stale flag")
            eq(ctx.sso.count("token") - n, 0, "/token calls for the old header")
            _req, resp2, _info = digest_request(c, "REGISTER", "alicepw", new[0])
        expect(resp2, 200, 2, "login with the fresh nonce")

    r.INSTANCES["nodea"] = lambda ctx: dict(udp_workers=2, params=nonce_param(("node_id", "sip-a")))
    r.INSTANCES["nodeb"] = lambda ctx: dict(udp_workers=2, params=nonce_param(("node_id", "sip-b")))

    @case("sec_nonce_of_another_node_is_stale", instance="nodea")
    def t_other_node(ctx):
        """Issue 13 item 1: two nodes with one secret. A nonce of node A answered to node B
        gets -3 and stale=true (the phone re-signs silently); a header accepted by A and
        replayed to B is refused the same way; nodes without node_id behave alike."""
        ctx.instance("nodeb")
        for issuer, verifier in (("nodea", "nodeb"), ("nodeb", "main"), ("main", "nodea")):
            with client(ctx, instance=issuer) as a:
                _r, ds = challenge_for(a)
                req, resp, _info = digest_request(a, "REGISTER", "alicepw", ds[0])
            expect(resp, 200, 2, "login on %s" % issuer)
            hdr = [h for h in req.headers if h[0] == "Authorization"]
            n = ctx.sso.count("token")
            with client(ctx, instance=verifier) as b:
                _q, resp = b.request("REGISTER", headers=hdr)
                expect(resp, 401, -3, "%s's accepted header replayed to %s" % (issuer, verifier))
                new = resp.digest_challenges()
                eq((new[0].get("stale") or "").lower(), "true", "stale flag on %s" % verifier)
                eq(ctx.sso.count("token") - n, 0, "/token calls for the replay")
                _req, resp2, _info = digest_request(b, "REGISTER", "alicepw", new[0])
            expect(resp2, 200, 2, "re-signed login on %s" % verifier)

    @case("sec_downgraded_answer_is_minus_8")
    def t_downgrade(ctx):
        """Item 4: a SHA-256/qop=auth challenge rewritten in transit to MD5 without qop: the
        answer (right for the rewritten challenge) is -8 and never reaches the SSO."""
        with client(ctx) as c:
            _r, ds = challenge_for(c, alg="SHA-256")
            eq(ds[0].algorithm, "SHA-256", "offered algorithm")
            for alg, qop in (("MD5", None), ("MD5", "auth"), ("SHA-256", None)):
                ch = copy.deepcopy(ds[0])
                ch.params["algorithm"] = alg
                if qop is None:
                    ch.params.pop("qop", None)
                n = ctx.sso.count("token")
                _req, resp, _info = digest_request(c, "REGISTER", "alicepw", ch)
                expect(resp, 401, -8, "answer with %s qop=%s to a SHA-256 qop=auth nonce"
                       % (alg, qop))
                eq(ctx.sso.count("token") - n, 0, "/token calls for the downgrade")
            _req, resp, _info = digest_request(c, "REGISTER", "alicepw", ds[0], alg="SHA-256")
        expect(resp, 200, 2, "the genuine SHA-256 answer")

    # ---- identity ----------------------------------------------------------------------

    @case("sec_identity_as_registrar_stores_it")
    def t_identity(ctx):
        """Item 5: identities compare on registrar's form (use_domain=0, case_sensitive=0):
        the SSO user alice@globex.com cannot register sip:alice@globex.com (registrar would
        file it under "alice", another domain's alice); case and escapes fold as registrar
        folds them."""
        sso = ctx.sso
        cases = [
            ("alice@globex.com", "sip:alice@globex.com", 401, -7),
            ("alice@example.com", "sip:alice@example.com", 401, -7),
            ("Alice", "sip:alice@example.com", 200, 1),
            ("alice", "sip:ALICE@example.com", 200, 1),
            ("alice", "sip:%61lice@example.com", 200, 1),
            ("alice", "sip:%62ob@example.com", 401, -7),
        ]
        for user, to_uri, status, code in cases:
            with client(ctx) as c:
                _q, resp = c.request("REGISTER", to_uri=to_uri, from_uri=to_uri,
                                     headers=[("X-SSO-Token", sso.issue_token(user))])
            expect(resp, status, code, "token user %r registering %s" % (user, to_uri))

    r.INSTANCES["secdom"] = lambda ctx: dict(
        udp_workers=2, params='modparam("sso_auth", "use_domain", 1)\n')

    @case("sec_use_domain_takes_the_realm", instance="secdom")
    def t_use_domain(ctx):
        """Item 6: with use_domain=1 an ordinary Digest client (username "alice") logs in:
        the domain comes from the realm, as in OpenSIPS auth."""
        r.digest_login(ctx, "alice", instance="secdom")
        form, _h = ctx.sso.last("token")
        eq(form.get("username"), "alice", "/token username")
        sso = ctx.sso
        for user, status, code in (("alice@example.com", 200, 1), ("alice", 401, -7),
                                   ("alice@globex.com", 401, -7)):
            with client(ctx, instance="secdom") as c:
                _q, resp = c.request("REGISTER", headers=[("X-SSO-Token", sso.issue_token(user))])
            expect(resp, status, code, "token user %r with use_domain=1" % user)

    # ---- tokens ------------------------------------------------------------------------

    r.INSTANCES["secaud"] = lambda ctx: dict(udp_workers=2, params=(
        'modparam("sso_auth", "audience", "opensips")\n'
        'modparam("sso_auth", "required_scope", "sip voice")\n'))

    @case("sec_token_audience_kind_and_scope", instance="secaud")
    def t_token_policy(ctx):
        """Item 7: with audience and required_scope set, only access tokens for this
        audience holding every scope pass; the rest is -6, insufficient_scope when the scope
        was the cause. With the defaults, refresh tokens are still refused."""
        sso = ctx.sso
        good = {"aud": ["account", "opensips"]}
        rows = [
            ("for opensips, scopes sip voice", dict(claims=good, scope="sip voice"), 200, 1, None),
            ("aud as a string", dict(claims={"aud": "opensips"}, scope="voice sip x"), 200, 1, None),
            ("no aud", dict(scope="sip voice"), 401, -6, "invalid_token"),
            ("another audience", dict(claims={"aud": "web"}, scope="sip voice"), 401, -6, "invalid_token"),
            ("refresh token", dict(claims=dict(good, token_type="refresh_token"), scope="sip voice"),
             401, -6, "invalid_token"),
            ("Keycloak refresh token", dict(claims=dict(good, typ="Refresh"), scope="sip voice"),
             401, -6, "invalid_token"),
            ("missing scope voice", dict(claims=good, scope="sip"), 401, -6, "insufficient_scope"),
        ]
        for what, kw, status, code, error in rows:
            with client(ctx, instance="secaud") as c:
                _q, resp = c.request("REGISTER", headers=[("X-SSO-Token", sso.issue_token("alice", **kw))])
            expect(resp, status, code, what)
            if error:
                b = r.bearer(resp)
                eq(b.get("error"), error, "%s: Bearer error" % what)
                if error == "insufficient_scope":
                    eq(b.get("scope"), "sip", "%s: advertised scope (bearer_scope)" % what)
        for what, kw, status, code in (
                ("refresh token, default settings", dict(claims={"token_type": "refresh_token"}), 401, -6),
                ("no aud, default settings", dict(), 200, 1)):
            with client(ctx) as c:
                _q, resp = c.request("REGISTER", headers=[("X-SSO-Token", sso.issue_token("alice", **kw))])
            expect(resp, status, code, what)

    def bound_contact(resp, uri):
        import re
        for v in resp.get_all("Contact"):
            for part in v.split(","):
                m = re.search(r"expires=(\d+)", part)
                if uri in part and m:
                    return int(m.group(1))
        raise r.Fail("no Contact %s with expires in the 200 OK: %r" % (uri, resp.get_all("Contact")))

    @case("sec_register_bound_every_form", instance="ident")
    def t_bind_forms(ctx):
        """Item 9: every expires form registrar reads is capped (15 zero-padded digits, a
        value that is not a number, which registrar replaces with default_expires), and a
        token without exp caps at cache_ttl (60 s here)."""
        short = ctx.sso.issue_token("alice", lifetime=120)
        no_exp = ctx.sso.issue_token("alice", claims={"exp": None})
        plans = [
            ("expires=000000000003600", short, "000000000003600", 120),
            ("expires=abc", short, "abc", 120),
            ("expires=x (shorter than the cap)", short, "x", 120),
            ("token without exp, expires=3600", no_exp, "3600", 60),
        ]
        for i, (what, tok, value, cap) in enumerate(plans):
            uri = "sip:alice-form%d@127.0.0.1:5099" % i
            with client(ctx, "alice", "ident") as c:
                _q, resp = c.request("REGISTER", contact=False, headers=[
                    ("X-SSO-Token", tok), ("Contact", "<%s>;expires=%s" % (uri, value))])
            expect(resp, 200, 1, what)
            got = bound_contact(resp, uri)
            check(cap - 3 <= got <= cap, "%s: registered for %d s, the cap is %d s" % (what, got, cap))

    # ---- bounded time ------------------------------------------------------------------

    class NamedSso:
        """The test SSO reached through a host name instead of 127.0.0.1."""
        def __init__(self, sso, host):
            self._sso, self._host = sso, host
            self.client_id, self.client_secret = sso.client_id, sso.client_secret

        @property
        def url(self):
            return "http://%s:%d" % (self._host, self._sso.port)

    def dns_hang_opts(ctx):
        if os.geteuid() != 0 or not r.shutil.which("unshare"):
            raise r.Skip("needs root and unshare(1) for a private /etc/resolv.conf")
        probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
        if probe.returncode != 0:
            raise r.Skip("unshare -m is not allowed here")
        # A DNS server on a loopback address that reads nothing and never answers.
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind(("127.0.0.153", 53))
        except OSError as e:
            raise r.Skip("cannot bind the silent DNS server: %s" % e)
        ctx.silent_dns = sock
        resolv = ctx.workdir / "resolv-hang.conf"
        resolv.write_text("nameserver 127.0.0.153\noptions timeout:30 attempts:2\n")
        wrap = ["unshare", "-m", "sh", "-c",
                'mount --bind "$0" /etc/resolv.conf && exec "$@"', str(resolv)]
        return dict(udp_workers=2, sso=NamedSso(ctx.sso, "sso-hang.example.net"), wrap=wrap)

    r.INSTANCES["dnshang"] = dns_hang_opts

    @case("sec_one_deadline_with_a_hanging_resolver", instance="dnshang")
    def t_dns_hang(ctx):
        """Item 10: the SSO's name never resolves (its DNS server is a loopback socket that
        never answers): every call still ends with -5 within http_timeout (1 s) plus a
        little, token then Digest included, and again on the next request."""
        inst = ctx.instance("dnshang")
        uri = "sip:" + DOMAIN
        limit = r.HTTP_TIMEOUT_MS / 1000.0 + 0.4
        with r.SipClient(inst.port, user="alice", domain=DOMAIN) as c:
            for what in ("token", "token again"):
                t = time.monotonic()
                _q, resp = c.request("REGISTER", headers=[("X-SSO-Token", "tok-" + what.replace(" ", "-"))])
                took = time.monotonic() - t
                expect(resp, 500, -5, what)
                check(took < limit, "%s: -5 after %.2f s (limit %.2f s)" % (what, took, limit))
            _r, ds = challenge_for(c)
            t = time.monotonic()
            _q, resp = c.request("REGISTER", headers=[("X-SSO-Token", "tok-3")] + auth(
                r.digest_value(ds[0], uri)))
            took = time.monotonic() - t
            expect(resp, 500, -5, "token then Digest")
            check(took < limit, "token then Digest: -5 after %.2f s (limit %.2f s)" % (took, limit))
        ctx.retire("dnshang")
        ctx.silent_dns.close()

    r.INSTANCES["dnsname"] = lambda ctx: dict(udp_workers=2, sso=NamedSso(ctx.sso, "localhost"))

    @case("sec_sso_host_resolved_by_its_own_process", instance="dnsname")
    def t_dns_process(ctx):
        """SSO URLs naming a host (localhost) instead of an IP literal: the "SSO resolver"
        process resolves it (MI ps lists it, the log says what it found, dns_failures stays
        0), Digest and token requests work, and a SIGTERM stops OpenSIPS cleanly within a
        few seconds, resolver included. With IP-literal URLs (main) there is no such process."""
        inst = ctx.instance("dnsname")
        check("SSO resolver" in inst.process_types(),
              "MI ps of the instance with a named SSO host: %r" % inst.process_types())
        check("SSO resolver" not in ctx.instance("main").process_types(),
              "a resolver process with IP-literal SSO URLs: %r"
              % ctx.instance("main").process_types())
        deadline = time.monotonic() + 5
        while "SSO host localhost resolved" not in inst.log_text():
            check(time.monotonic() < deadline, "no \"SSO host localhost resolved\" line in the log")
            time.sleep(0.1)
        with r.SipClient(inst.port, user="alice", domain=DOMAIN) as c:
            _r, ds = challenge_for(c)
            _req, resp, _info = digest_request(c, "REGISTER", "alicepw", ds[0])
        expect(resp, 200, 2, "Digest login through the named SSO host")
        tok = resp.get("X-SSO-Token")
        with r.SipClient(inst.port, user="alice", domain=DOMAIN) as c:
            _q, resp = c.request("REGISTER", headers=[("X-SSO-Token", tok)])
        expect(resp, 200, 1, "token through the named SSO host")
        eq(inst.sso_stats().get("dns_failures"), 0, "dns_failures")
        pids = inst.children()
        t = time.monotonic()
        inst.proc.send_signal(r.signal.SIGTERM)
        try:
            rc = inst.proc.wait(timeout=6)
        except subprocess.TimeoutExpired:
            rc = None
        took = time.monotonic() - t
        ctx.retire("dnsname")
        check(rc == 0, "OpenSIPS exit status after SIGTERM: %r (after %.1f s)" % (rc, took))
        def alive(pid):
            try:
                stat = open("/proc/%d/stat" % pid).read()
            except OSError:
                return False
            return stat.rsplit(")", 1)[1].split()[0] != "Z"
        deadline = time.monotonic() + 2
        while any(alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        left = [p for p in pids if alive(p)]
        check(not left, "processes left after the shutdown: %r" % left)

    @case("sec_waiter_keeps_its_own_deadline")
    def t_pending_waiter(ctx):
        """Item 10: two workers get the same new token while the SSO hangs: the one waiting
        for the other's introspection gives up at its own deadline (-5 within http_timeout),
        instead of waiting that long and then asking the SSO itself."""
        sso = ctx.sso
        tok = "pending-" + os.urandom(6).hex()
        limit = r.HTTP_TIMEOUT_MS / 1000.0 + 0.5
        clients = [client(ctx) for _ in range(2)]
        sso.mode = "hang"
        try:
            sent = [(c, c.build("REGISTER", headers=[("X-SSO-Token", tok)])) for c in clients]
            t = time.monotonic()
            for c, q in sent:
                c.send(q)
            answers = [c.wait_final(q) for c, q in sent]
            took = time.monotonic() - t
        finally:
            sso.mode = None
            for c in clients:
                c.close()
        for resp in answers:
            expect(resp, 500, -5, "same token on two workers, SSO hanging")
        check(took < limit, "both answered after %.2f s (limit %.2f s)" % (took, limit))

    # ---- honest outcomes ---------------------------------------------------------------

    r.INSTANCES["secfail"] = lambda ctx: dict(
        udp_workers=1, params='modparam("sso_auth", "bind_register_to_token", 1)\n',
        after_any='\tappend_to_reply("X-Any-User: $sso(user)\\r\\n");\n'
                  '\tsso_consume_credentials();\n'
                  '\tappend_to_reply("X-Any-Consume: $rc\\r\\n");\n')

    @case("sec_no_identity_after_a_late_error", instance="secfail")
    def t_late_error(ctx):
        """Item 11: a token is valid but its REGISTER's Contact cannot be parsed, so capping
        the registration fails: -5, and after it $sso(user) is null and
        sso_consume_credentials finds nothing authorized."""
        tok = ctx.sso.issue_token("alice", lifetime=120)
        with client(ctx, instance="secfail") as c:
            _q, resp = c.request("REGISTER", contact=False, headers=[
                ("X-SSO-Token", tok), ("Contact", "<sip:alice@127.0.0.1:5099;expires=60")])
        expect(resp, 500, -5, "token with an unparsable Contact")
        eq(resp.get("X-Any-User"), "<null>", "$sso(user) after the -5")
        eq(resp.get("X-Any-Consume"), "-1", "sso_consume_credentials after the -5")
        with client(ctx, instance="secfail") as c:
            _q, resp = c.request("REGISTER", headers=[("X-SSO-Token", tok)])
        expect(resp, 200, 1, "the same token with a good Contact")
        eq(resp.get("X-Any-User"), "alice", "$sso(user) after a success")

    @case("sec_auth_int_body_is_opensips_body")
    def t_auth_int_body(ctx):
        """Item 12: qop=auth-int hashes the body OpenSIPS sees: Content-Length bytes after
        the header end, not the bytes that trail the datagram, and LF-only messages too."""
        body = b"hello"
        for lf_only in (False, True):
            with client(ctx) as c:
                _r, ds = challenge_for(c, "MESSAGE", qop="auth-int", body=body)
                probe = c.build("MESSAGE", body=body)
                c.cseq -= 1
                value, _info = r.digest_credentials(ds[0], "MESSAGE", probe.uri, "alice",
                                                    "alicepw", qop="auth-int", body=body)
                q = c.build("MESSAGE", body=body, headers=[
                    ("Proxy-Authorization", value), ("X-Test-Qop", "auth-int")])
                head, _, _rest = q.data.partition(b"\r\n\r\n")
                if lf_only:
                    head = head.replace(b"\r\n", b"\n")
                    q.data = head + b"\n\n" + body + b"\r\n\r\nTRAILING"
                else:
                    q.data = head + b"\r\n\r\n" + body + b"TRAILING-BYTES"
                c.send(q)
                resp = c.wait_final(q)
            what = "LF-only message" if lf_only else "body followed by trailing bytes"
            expect(resp, 200, 2, what)
            form, _h = ctx.sso.last("token")
            eq(form.get("body_hash"), r.digest_hash("MD5", body), "%s: /token body_hash" % what)

    # ---- token headers and consume -----------------------------------------------------

    @case("sec_token_headers_one_token")
    def t_token_headers(ctx):
        """Also-look-at: an empty X-SSO-Token is absent (a Bearer beside it decides); two
        different tokens, or a malformed one beside a valid Bearer, are -6 (invalid_request /
        invalid_token), including a second X-SSO-Token header."""
        sso = ctx.sso
        good, other = sso.issue_token("alice"), sso.issue_token("alice")
        rows = [
            ("empty X-SSO-Token beside a Bearer", [("X-SSO-Token", ""), ("Authorization", "Bearer " + good)], 200, 1, None),
            ("the same token twice", [("X-SSO-Token", good), ("Authorization", "Bearer " + good)], 200, 1, None),
            ("two different tokens", [("X-SSO-Token", good), ("Authorization", "Bearer " + other)], 401, -6, "invalid_request"),
            ("two X-SSO-Token headers", [("X-SSO-Token", good), ("X-SSO-Token", other)], 401, -6, "invalid_request"),
            ("malformed X-SSO-Token beside a Bearer", [("X-SSO-Token", "not a token"), ("Authorization", "Bearer " + good)], 401, -6, "invalid_token"),
        ]
        for what, headers, status, code, error in rows:
            with client(ctx) as c:
                _q, resp = c.request("REGISTER", headers=headers)
            expect(resp, status, code, what)
            if error:
                eq(r.bearer(resp).get("error"), error, "%s: Bearer error" % what)

    @case("sec_consume_removes_every_token")
    def t_consume_all(ctx):
        """Also-look-at: sso_consume_credentials removes every token-carrying header (here
        a Bearer copy of the X-SSO-Token that decided), not only the deciding one."""
        tok = ctx.sso.issue_token("alice")
        fwd = r._relay(ctx, [("X-SSO-Token", tok), ("Proxy-Authorization", "Bearer " + tok)])
        check(not fwd.has("X-SSO-Token"), "X-SSO-Token relayed")
        check(not fwd.has("Proxy-Authorization"), "Bearer Proxy-Authorization relayed")
