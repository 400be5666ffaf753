"""End-to-end cases for the async form: `async(sso_authorize(realm), resume_route)` and
`async(sso_proxy_authorize(realm), resume_route)`. Registered into tests/e2e/run.py's case
list by `register(run)`.

The "async" instance routes every request carrying X-Test-Async through the async
statement; its resume routes read `$rc` and act exactly as the sync script does. The
module decides locally (ASYNC_NO_IO) or after its SSO round trip (ASYNC_SYNC): either way
the resume route runs at once, with the code the sync call returns.
"""

import time

ASYNC_ROUTE = """
	if (is_present_hf("X-Test-Async")) {
		if (is_method("REGISTER")) {
			async(sso_authorize("$td"), async_register);
			exit;
		}
		async(sso_proxy_authorize("$fd"), async_proxy);
		exit;
	}
"""

ASYNC_BLOCKS = """
route[async_register] {
	$var(rc) = $rc;
	append_to_reply("X-Auth-Code: $var(rc)\\r\\n");
	if ($var(rc) < 0) {
		if ($var(rc) == -5) {
			send_reply(500, "SSO Unavailable");
			exit;
		}
		sso_challenge("$td", "auth", "MD5");
		exit;
	}
	append_to_reply("X-Sso-User: $sso(user)\\r\\n");
	if (!save("location"))
		sl_reply_error();
	exit;
}

route[async_proxy] {
	$var(rc) = $rc;
	append_to_reply("X-Auth-Code: $var(rc)\\r\\n");
	if ($var(rc) < 0) {
		if ($var(rc) == -5) {
			send_reply(500, "SSO Unavailable");
			exit;
		}
		sso_proxy_challenge("$fd", "auth", "MD5");
		exit;
	}
	append_to_reply("X-Sso-User: $sso(user)\\r\\n");
	send_reply(200, "OK");
	exit;
}
"""

ASYNC = [("X-Test-Async", "1")]


def register(r):
    """Adds this file's cases to the runner `r` (the tests/e2e/run.py module)."""
    case, check, eq, expect = r.case, r.check, r.eq, r.expect
    client = r.client

    r.INSTANCES["async"] = lambda ctx: dict(udp_workers=2, route=ASYNC_ROUTE,
                                            blocks=ASYNC_BLOCKS)

    def login(ctx, user="alice", method="REGISTER", want=(200, 2)):
        return r.digest_login(ctx, user, method=method, instance="async", want=want,
                              extra=ASYNC)

    @case("async_register_codes", instance="async")
    def t_async_register(ctx):
        sso = ctx.sso
        with client(ctx, instance="async") as c:
            _q, resp = c.request("REGISTER", headers=ASYNC)
        expect(resp, 401, -4, "async REGISTER without credentials")
        check(resp.digest_challenges(), "the resume route's challenge carries Digest")
        logins = sso.count("token")
        resp, _info = login(ctx)
        eq(sso.count("token"), logins + 1, "Digest logins the SSO saw")
        tok = resp.get("X-SSO-Token")
        check(tok, "the 200 of an async Digest login carries the new token")
        eq(resp.get("X-Sso-User"), "alice", "$sso(user) in the resume route")
        seen = sso.count("introspect")
        for _ in range(2):
            with client(ctx, instance="async") as c:
                _q, resp = c.request("REGISTER", headers=ASYNC + [("X-SSO-Token", tok)])
            expect(resp, 200, 1, "async REGISTER with the token")
        eq(sso.count("introspect"), seen + 1, "introspections (the second is a cache hit)")
        with client(ctx, "bob", instance="async") as c:
            _q, resp = c.request("REGISTER", headers=ASYNC + [("X-SSO-Token", tok)])
        expect(resp, 401, -7, "alice's token on bob's REGISTER")
        login(ctx, "alice", want=None)

    @case("async_proxy_codes", instance="async")
    def t_async_proxy(ctx):
        with client(ctx, instance="async") as c:
            _q, resp = c.request("MESSAGE", headers=ASYNC, body=b"hi")
        expect(resp, 407, -4, "async MESSAGE without credentials")
        resp, _info = login(ctx, "carol", method="MESSAGE")
        tok = ctx.sso.issue_token("carol")
        with client(ctx, "carol", instance="async") as c:
            _q, resp = c.request("MESSAGE", headers=ASYNC + [("Proxy-Authorization",
                                                              "Bearer " + tok)], body=b"hi")
        expect(resp, 200, 1, "async MESSAGE with a Bearer token")

    @case("async_sso_down_is_minus_5", instance="async")
    def t_async_down(ctx):
        sso = ctx.sso
        tok = sso.issue_token("alice")
        sso.mode = "500"
        try:
            with client(ctx, instance="async") as c:
                _q, resp = c.request("REGISTER", headers=ASYNC + [("X-SSO-Token", tok)])
            expect(resp, 500, -5, "async REGISTER, SSO answering 500")
        finally:
            sso.mode = None
        with client(ctx, instance="async") as c:
            _q, resp = c.request("REGISTER", headers=ASYNC + [("X-SSO-Token", tok)])
        expect(resp, 200, 1, "the same token once the SSO is back")

    @case("async_retransmission_absorbed_by_tm", instance="async")
    def t_async_retrans(ctx):
        # The async statement runs inside a tm transaction: a copy of the request with the
        # same branch is absorbed by tm and answered with the first copy's reply.
        sso = ctx.sso
        with client(ctx, instance="async") as c:
            _r, ds = r.challenge_for(c, extra=ASYNC)
            req, resp, _info = r.digest_request(c, "REGISTER", "alicepw", ds[0], extra=ASYNC)
            expect(resp, 200, 2, "async Digest login")
            logins = sso.count("token")
            c.send(req)
            again = c.wait_final(req, timeout=3.0)
        eq(again.status, 200, "status of the retransmission's answer")
        eq(again.get("X-SSO-Token"), resp.get("X-SSO-Token"), "token of the retransmission")
        time.sleep(0.1)
        eq(sso.count("token"), logins, "Digest logins caused by the retransmission")
