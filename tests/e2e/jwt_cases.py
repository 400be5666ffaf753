"""End-to-end cases for local JWT validation (jwks_url, jwt_key_file): RS256, ES256 and
EdDSA tokens accepted without introspection, forgeries refused, opaque tokens falling back to
introspection, key rotation through a JWK Set refetch that a flood of unknown `kid`s cannot
multiply. Registered into tests/e2e/run.py's case list by `register(run)`.

The "jwt" instance talks to its own https SSO (test CA from certs.py) that also serves the
JWK Set; the "jwtfile" instance reads one PEM key from jwt_key_file.
"""

import secrets
import time

ISSUER = "https://sso.example.com/realms/voip"
AUDIENCE = "opensips"
JWT_AFTER_AUTH = """
	append_to_reply("X-Sso-User: $sso(user)\\r\\nX-Sso-Tenant: $sso(claim.tenant)\\r\\n");
	append_to_reply("X-Sso-Source: $sso(token_source)\\r\\n");
"""


def register(r):
    """Adds this file's cases to the runner `r` (the tests/e2e/run.py module)."""
    case, Skip, check, eq, expect = r.case, r.Skip, r.check, r.eq, r.expect
    state = {}

    def setup(ctx):
        """The https SSO with its JWK Set, and the token issuer; made once per run."""
        if "sso" in state:
            return state
        import certs
        from jwt_issuer import JwtIssuer
        if not certs.openssl_path():
            raise Skip("no `openssl` command: cannot make keys and certificates")
        d = ctx.workdir / "jwt"
        ca = certs.make_ca(d, "jwt-ca")
        leaf = certs.make_leaf(d, "jwt-sso", ca, ["IP:127.0.0.1", "DNS:localhost"])
        sso = r.SsoServer(tls=(str(leaf[0]), str(leaf[1]))).start()
        issuer = JwtIssuer(d)
        sso.jwks = issuer.jwks()
        state.update(sso=sso, ca=ca[0], issuer=issuer, dir=d)
        return state

    def params(st, key_file=None):
        text = ('modparam("sso_auth", "tls_ca_file", "%s")\n' % st["ca"]
                + 'modparam("sso_auth", "jwt_issuer", "%s")\n' % ISSUER
                + 'modparam("sso_auth", "jwt_audience", "%s")\n' % AUDIENCE)
        if key_file:
            return text + 'modparam("sso_auth", "jwt_key_file", "%s")\n' % key_file
        return text + 'modparam("sso_auth", "jwks_url", "%s/jwks")\n' % st["sso"].url

    def jwt_opts(ctx):
        st = setup(ctx)
        return dict(udp_workers=2, sso=st["sso"], params=params(st), after_auth=JWT_AFTER_AUTH)

    def jwtfile_opts(ctx):
        st = setup(ctx)
        pem = st["dir"] / "ec-only.pub.pem"
        pem.write_text(st["issuer"].public_pem("ec"))
        return dict(udp_workers=2, sso=st["sso"], params=params(st, key_file=pem),
                    after_auth=JWT_AFTER_AUTH)

    r.INSTANCES["jwt"] = jwt_opts
    r.INSTANCES["jwtfile"] = jwtfile_opts

    def async_jwt_opts(ctx):
        """One worker, X-Test-Async requests through the async statement, JWT keys from
        jwks_url: its first JWTs find no JWK Set yet."""
        from async_cases import ASYNC_BLOCKS, ASYNC_ROUTE
        st = setup(ctx)
        return dict(udp_workers=1, sso=st["sso"], params=params(st), route=ASYNC_ROUTE,
                    blocks=ASYNC_BLOCKS)

    r.INSTANCES["async_jwt"] = async_jwt_opts

    def claims(user="alice", lifetime=600, **extra):
        now = int(time.time())
        c = {"iss": ISSUER, "aud": [AUDIENCE, "account"], "sub": "f81d4fae-" + user,
             "preferred_username": user, "exp": now + lifetime, "iat": now,
             "jti": secrets.token_hex(8), "tenant": "t1", "scope": "openid sip"}
        c.update(extra)
        return c

    def register_with(ctx, inst, token, header="X-SSO-Token"):
        value = token if header == "X-SSO-Token" else "Bearer " + token
        with r.SipClient(ctx.instance(inst).port) as c:
            _q, resp = c.request("REGISTER", headers=[(header, value)])
        return resp

    @case("jwt_validated_locally", instance="jwt")
    def t_jwt_ok(ctx):
        st = setup(ctx)
        sso, issuer = st["sso"], st["issuer"]
        n_intro, n_jwks = sso.count("introspect"), sso.count("jwks")
        for name in ("rsa", "ec", "ed"):
            for header in ("X-SSO-Token", "Authorization"):
                resp = register_with(ctx, "jwt", issuer.token(name, claims()), header)
                expect(resp, 200, 1, "%s token in %s" % (name, header))
                eq(resp.get("X-Sso-User"), "alice", "$sso(user) of a %s JWT" % name)
                eq(resp.get("X-Sso-Tenant"), "t1", "$sso(claim.tenant) of a %s JWT" % name)
        eq(sso.count("introspect") - n_intro, 0, "introspections for JWTs")
        fetched = sso.count("jwks") - n_jwks
        check(1 <= fetched <= 2, "JWK Set fetched %d times by 2 workers" % fetched)
        r.note("jwt: 6 JWTs (RS256, ES256, EdDSA) accepted, 0 introspections, %d JWK Set "
               "fetches", fetched)

    @case("async_second_jwt_waits_for_the_jwks_fetch", instance="async_jwt")
    def t_async_jwks_wait(ctx):
        from async_cases import ASYNC, fire, tally, token_request, close_all
        st = setup(ctx)
        sso, issuer = st["sso"], st["issuer"]
        inst = ctx.instance("async_jwt")
        n_jwks = sso.count("jwks")
        delay_ms = 400
        # Two different JWTs at once on the one worker, before it holds any JWK Set: the
        # first asks for the set, the second waits for that fetch instead of failing (-5).
        items = [token_request(inst.port, issuer.token(name, claims()), ASYNC)
                 for name in ("rsa", "ed")]
        sso.jwks_delay = delay_ms / 1000
        try:
            res = fire(inst.port, items, timeout=8)
        finally:
            sso.jwks_delay = 0
            close_all(items)
        eq(tally(res), {(200, 1): 2}, "answers (status, X-Auth-Code) of the two JWTs")
        eq(sso.count("jwks") - n_jwks, 1, "JWK Set fetches")
        slowest = max((ms for _r, ms, _t in res if ms is not None), default=None)
        check(slowest is not None and slowest >= delay_ms - 50,
              "both answered after the JWK Set arrived (slowest %s ms, fetch %d ms)"
              % (slowest, delay_ms))
        r.note("async_jwt: 2 JWTs during one %d ms JWK Set fetch on 1 worker: both 200/1, "
               "1 fetch, slowest %.0f ms", delay_ms, slowest or -1)

    @case("jwt_forgeries_refused", instance="jwt")
    def t_jwt_bad(ctx):
        st = setup(ctx)
        sso, issuer = st["sso"], st["issuer"]
        n_intro = sso.count("introspect")
        good = issuer.token("ec", claims())
        head, body, sig = good.split(".")
        other = issuer.token("ec", claims(user="bob")).split(".")[1]
        bad = {
            "alg none": issuer.forged_none(claims()),
            "HS256 keyed with the RSA public key": issuer.forged_hmac(claims()),
            "expired beyond the leeway": issuer.token("ed", claims(lifetime=-120)),
            "not yet valid (nbf)": issuer.token("ed", claims(nbf=int(time.time()) + 300)),
            "wrong issuer": issuer.token("rsa", claims(iss="https://evil.example.com")),
            "wrong audience": issuer.token("rsa", claims(aud="someone-else")),
            "payload swapped under a valid signature": ".".join([head, other, sig]),
            "no exp": issuer.token("ec", {k: v for k, v in claims().items() if k != "exp"}),
        }
        for what, tok in bad.items():
            resp = register_with(ctx, "jwt", tok)
            expect(resp, 401, -6, what)
            eq(r.bearer(resp).get("error"), "invalid_token", "Bearer error for %s" % what)
        eq(sso.count("introspect") - n_intro, 0, "introspections for refused JWTs")
        # a JWT of bob presented for alice's AOR is an identity mismatch, not a bad token
        resp = register_with(ctx, "jwt", issuer.token("ec", claims(user="bob")))
        expect(resp, 401, -7, "valid JWT of another user")

    @case("jwt_opaque_token_introspected", instance="jwt")
    def t_jwt_opaque(ctx):
        st = setup(ctx)
        sso = st["sso"]
        n = sso.count("introspect")
        resp = register_with(ctx, "jwt", sso.issue_token("alice"))
        expect(resp, 200, 1, "opaque token next to JWT validation")
        eq(sso.count("introspect") - n, 1, "introspections for an opaque token")
        eq(resp.get("X-Sso-Source"), "header", "$sso(token_source)")

    @case("jwt_unknown_kid_flood_bounded", instance="jwt")
    def t_jwt_flood(ctx):
        st = setup(ctx)
        sso, issuer = st["sso"], st["issuer"]
        n = sso.count("jwks")
        for i in range(30):
            tok = issuer.token("ec", claims(), kid="made-up-%d" % i)
            expect(register_with(ctx, "jwt", tok), 401, -6, "unknown kid #%d" % i)
        fetched = sso.count("jwks") - n
        check(fetched <= 2, "30 unknown kids caused %d JWK Set fetches (max 1 per worker "
              "per 15 s)" % fetched)
        r.note("jwt: 30 tokens with unknown kids -> %d JWK Set fetches", fetched)

    @case("jwt_key_rotation", instance="jwt")
    def t_jwt_rotation(ctx):
        st = setup(ctx)
        sso = st["sso"]
        from jwt_issuer import JwtIssuer
        fresh = JwtIssuer(st["dir"], prefix="rotated-")
        sso.jwks = {"keys": st["issuer"].jwks()["keys"] + fresh.jwks(["ec"])["keys"]}
        # each worker refetches at most every 15 s: wait that out once
        time.sleep(16)
        n = sso.count("jwks")
        resp = register_with(ctx, "jwt", fresh.token("ec", claims()))
        expect(resp, 200, 1, "token signed with a key published after start")
        eq(sso.count("jwks") - n, 1, "JWK Set refetches for the new kid")

    @case("jwt_key_file", instance="jwtfile")
    def t_jwt_file(ctx):
        st = setup(ctx)
        sso, issuer = st["sso"], st["issuer"]
        n_jwks, n_intro = sso.count("jwks"), sso.count("introspect")
        expect(register_with(ctx, "jwtfile", issuer.token("ec", claims())), 200, 1,
               "ES256 token checked with jwt_key_file")
        expect(register_with(ctx, "jwtfile", issuer.token("rsa", claims())), 401, -6,
               "RS256 token whose key is not in jwt_key_file")
        eq(sso.count("jwks") - n_jwks, 0, "JWK Set fetches with jwt_key_file")
        eq(sso.count("introspect") - n_intro, 0, "introspections with jwt_key_file")

    @case("jwt_expired_inside_leeway_is_one_rule", instance="jwt")
    def t_jwt_leeway(ctx):
        """Issue 14 item 8: a JWT that expired 5 s ago, with the default 30 s jwt_leeway, is
        accepted by every check, every time (it used to pass the JWT check, then get -6 and
        be cached as inactive)."""
        st = setup(ctx)
        token = st["issuer"].token("ed", claims(lifetime=-5))
        for i in range(3):
            expect(register_with(ctx, "jwt", token), 200, 1, "use %d inside the leeway" % i)
        expect(register_with(ctx, "jwt", st["issuer"].token("ed", claims(lifetime=-40))),
               401, -6, "expired beyond the leeway")
