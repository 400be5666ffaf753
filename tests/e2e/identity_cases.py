"""End-to-end cases for identity from the SSO: sso_is_user_in, $sso(...), the asserted
identity functions (sso_append_rpid / sso_append_pai / sso_is_rpid_user_e164) and
bind_register_to_token. Registered into tests/e2e/run.py's case list by `register(run)`.

They run on the "ident" instance: one UDP worker (so a request's script always meets the
state the same worker left), group claims including a nested Keycloak-style claim, and
bind_register_to_token on. Its script reports every $sso value and function result in
X-* reply headers.
"""

import re
import time

ALICE_CLAIMS = {
    "groups": ["staff", "sip-users"],
    "realm_access": {"roles": ["voip-admin"]},
    "phone_number": "+1 (425) 555-0101",
}
BOB_CLAIMS = {"groups": ["guests"], "phone_number": "bob-desk"}
CAROL_CLAIMS = {"groups": ["staff"], "phone_number": "+1555\r\nX-Evil: injected"}

IDENT_PARAMS = """
modparam("sso_auth", "group_claims", "groups, realm_access.roles, scope")
modparam("sso_auth", "rpid_claim", "phone_number")
modparam("sso_auth", "bind_register_to_token", 1)
"""

# Before authorization: $sso must read as null here, whatever the worker did before.
IDENT_ROUTE = """
	if (is_present_hf("X-Test-Pre"))
		append_to_reply("X-Pre-User: $sso(user)\\r\\nX-Pre-Claim: $sso(claim.groups)\\r\\n");
"""

IDENT_AFTER_AUTH = """
	if (is_present_hf("X-Test-Fail"))
		t_on_failure("ident_failed");
	append_to_reply("X-Sso-User: $sso(user)\\r\\n");
	append_to_reply("X-Sso-Source: $sso(token_source)\\r\\n");
	append_to_reply("X-Sso-Exp: $sso(exp)\\r\\n");
	append_to_reply("X-Sso-Expires-In: $sso(expires_in)\\r\\n");
	append_to_reply("X-Sso-Scope: $sso(scope)\\r\\n");
	append_to_reply("X-Sso-Phone: $sso(claim.phone_number)\\r\\n");
	append_to_reply("X-Sso-Roles: $sso(claim.realm_access.roles)\\r\\n");
	append_to_reply("X-Sso-Missing: $sso(claim.no_such_claim)\\r\\n");
	if (is_present_hf("X-Test-Group")) {
		sso_is_user_in("$hdr(X-Test-Who)", "$hdr(X-Test-Group)");
		append_to_reply("X-Group-Code: $rc\\r\\n");
	}
	# these run on relayed requests: their results travel in the relayed request
	if (is_present_hf("X-Test-E164")) {
		sso_is_rpid_user_e164();
		append_hf("X-E164-Code: $rc\\r\\n");
	}
	if (is_present_hf("X-Test-Rpid")) {
		if ($hdr(X-Test-Rpid) == "args")
			sso_append_rpid("", ";screen=no");
		else
			sso_append_rpid();
		append_hf("X-Rpid-Code: $rc\\r\\n");
	}
	if (is_present_hf("X-Test-Pai")) {
		sso_append_pai();
		append_hf("X-Pai-Code: $rc\\r\\n");
	}
"""


# The relayed request failed downstream: the identity checks still answer, in the failure
# route, for the request this worker authorized.
IDENT_BLOCKS = """
failure_route[ident_failed] {
	sso_is_user_in("Credentials", "staff");
	$var(staff) = $rc;
	sso_is_user_in("Credentials", "guests");
	$var(guests) = $rc;
	t_reply(403, "staff $var(staff) guests $var(guests) user $sso(user)");
}
"""


def register(r):
    """Adds this file's cases to the runner `r` (the tests/e2e/run.py module)."""
    case, Fail, check, eq, expect = r.case, r.Fail, r.check, r.eq, r.expect
    client, DOMAIN = r.client, r.DOMAIN

    def ident_opts(ctx):
        sso = ctx.sso
        sso.user_claims.update({"alice": ALICE_CLAIMS, "bob": BOB_CLAIMS,
                                "carol": CAROL_CLAIMS})
        return dict(udp_workers=1, params=IDENT_PARAMS, route=IDENT_ROUTE,
                    after_auth=IDENT_AFTER_AUTH, blocks=IDENT_BLOCKS)

    r.INSTANCES["ident"] = ident_opts

    def message(ctx, user, headers, to_user="bob", uri_user=None):
        with client(ctx, user, "ident") as c:
            to_uri = "sip:%s@%s" % (to_user, DOMAIN)
            uri = "sip:%s@%s" % (uri_user or to_user, DOMAIN)
            _q, resp = c.request("MESSAGE", uri=uri, to_uri=to_uri, headers=headers)
        return resp

    def token(ctx, user="alice", **kw):
        return ctx.sso.issue_token(user, **kw)

    # ---- $sso(...) --------------------------------------------------------------------

    @case("sso_pv_token_values", instance="ident")
    def t_pv_token(ctx):
        exp_before = int(time.time()) + 3600
        tok = token(ctx)
        resp = message(ctx, "alice", [("X-SSO-Token", tok)])
        expect(resp, 200, 1, "MESSAGE with token")
        eq(resp.get("X-Sso-User"), "alice", "$sso(user)")
        eq(resp.get("X-Sso-Source"), "header", "$sso(token_source)")
        exp = int(resp.get("X-Sso-Exp") or 0)
        check(abs(exp - exp_before) <= 2, "$sso(exp) %r is not the token's exp" % exp)
        left = int(resp.get("X-Sso-Expires-In") or -1)
        check(3590 <= left <= 3600, "$sso(expires_in) %r" % left)
        eq(resp.get("X-Sso-Scope"), "sip", "$sso(scope)")
        eq(resp.get("X-Sso-Phone"), "+1 (425) 555-0101", "$sso(claim.phone_number)")
        eq(resp.get("X-Sso-Roles"), "voip-admin", "$sso(claim.realm_access.roles)")
        eq(resp.get("X-Sso-Missing"), "<null>", "$sso(claim.no_such_claim)")
        # the same values from the shared cache (second use: no introspection)
        n = ctx.sso.count("introspect")
        resp = message(ctx, "alice", [("Proxy-Authorization", "Bearer " + tok)])
        expect(resp, 200, 1, "MESSAGE with the cached token as Bearer")
        eq(ctx.sso.count("introspect") - n, 0, "introspections on the cached use")
        eq(resp.get("X-Sso-Source"), "bearer", "$sso(token_source) for Bearer")
        eq(resp.get("X-Sso-Phone"), "+1 (425) 555-0101", "cached $sso(claim.phone_number)")
        eq(resp.get("X-Sso-Roles"), "voip-admin", "cached nested claim")

    @case("sso_pv_digest_values", instance="ident")
    def t_pv_digest(ctx):
        n = ctx.sso.count("introspect")
        resp, _ = r.digest_login(ctx, "alice", method="MESSAGE", instance="ident",
                                 to_uri="sip:bob@" + DOMAIN, uri="sip:bob@" + DOMAIN)
        eq(resp.get("X-Sso-User"), "alice", "$sso(user) after Digest")
        eq(resp.get("X-Sso-Source"), "digest", "$sso(token_source) after Digest")
        eq(resp.get("X-Sso-Phone"), "+1 (425) 555-0101",
           "claims of the issued token after Digest")
        eq(ctx.sso.count("introspect") - n, 1,
           "introspections of the issued token (once, then shared)")
        # the issued token is now cached: the client's next request needs no SSO call
        tok = resp.get("X-SSO-Token")
        check(tok, "no X-SSO-Token in the Digest 200")
        resp = message(ctx, "alice", [("X-SSO-Token", tok)])
        expect(resp, 200, 1, "next request with the issued token")
        eq(ctx.sso.count("introspect") - n, 1, "introspections after reusing the token")

    @case("sso_pv_empty_without_authorization", instance="ident")
    def t_pv_empty(ctx):
        tok = token(ctx)
        resp = message(ctx, "alice", [("X-SSO-Token", tok)])
        expect(resp, 200, 1, "authorized MESSAGE")
        # next request (same single worker), read before any authorization: nothing leaks
        resp = message(ctx, "alice", [("X-Test-Pre", "1")])
        eq(resp.status, 407, "unauthenticated MESSAGE")
        eq(resp.get("X-Pre-User"), "<null>", "$sso(user) of an unauthorized request")
        eq(resp.get("X-Pre-Claim"), "<null>", "$sso(claim.groups) of an unauthorized request")
        # a failed token: still nothing
        resp = message(ctx, "alice", [("X-SSO-Token", token(ctx, "bob")), ("X-Test-Pre", "1")])
        expect(resp, 407, -7, "token of another user")
        eq(resp.get("X-Pre-User"), "<null>", "$sso(user) before a failing authorization")

    # ---- sso_is_user_in ---------------------------------------------------------------

    @case("is_user_in_groups_and_uris", instance="ident")
    def t_groups(ctx):
        tok = token(ctx)
        plans = [
            ("Credentials", "staff", 1), ("Credentials", "sip-users", 1),
            ("Credentials", "voip-admin", 1), ("Credentials", "sip", 1),
            ("Credentials", "Staff", -1), ("Credentials", "guests", -1),
            ("From", "staff", 1), ("To", "staff", -1),
            ("Request-URI", "staff", -1),
        ]
        for who, group, want in plans:
            resp = message(ctx, "alice", [("X-SSO-Token", tok), ("X-Test-Who", who),
                                          ("X-Test-Group", group)])
            expect(resp, 200, 1, "MESSAGE for %s/%s" % (who, group))
            eq(resp.get("X-Group-Code"), str(want), "sso_is_user_in(%s, %s)" % (who, group))
        # R-URI and To naming alice herself (a MESSAGE to oneself)
        resp = message(ctx, "alice", [("X-SSO-Token", tok), ("X-Test-Who", "Request-URI"),
                                      ("X-Test-Group", "staff")], to_user="alice")
        eq(resp.get("X-Group-Code"), "1", "sso_is_user_in(Request-URI) for alice's own URI")
        resp = message(ctx, "alice", [("X-SSO-Token", tok), ("X-Test-Who", "To"),
                                      ("X-Test-Group", "staff")], to_user="alice")
        eq(resp.get("X-Group-Code"), "1", "sso_is_user_in(To) for alice's own URI")
        # bob is not staff
        resp = message(ctx, "bob", [("X-SSO-Token", token(ctx, "bob")),
                                    ("X-Test-Who", "Credentials"), ("X-Test-Group", "staff")])
        eq(resp.get("X-Group-Code"), "-1", "sso_is_user_in for bob")
        # a bad `who` is a script error: -5 and a log line
        inst = ctx.instance("ident")
        since = inst.log_size()
        resp = message(ctx, "alice", [("X-SSO-Token", tok), ("X-Test-Who", "Contact"),
                                      ("X-Test-Group", "staff")])
        eq(resp.get("X-Group-Code"), "-5", "sso_is_user_in(Contact, ...)")
        check("bad first argument" in inst.log_text(since), "no log line for the bad argument")

    @case("is_user_in_after_digest", instance="ident")
    def t_groups_digest(ctx):
        resp, _ = r.digest_login(ctx, "alice", method="MESSAGE", instance="ident",
                                 to_uri="sip:bob@" + DOMAIN, uri="sip:bob@" + DOMAIN,
                                 extra=[("X-Test-Who", "Credentials"),
                                        ("X-Test-Group", "voip-admin")])
        eq(resp.get("X-Group-Code"), "1", "group of a Digest-authenticated user")

    @case("is_user_in_failure_route", instance="ident")
    def t_groups_failure(ctx):
        tok = token(ctx)
        with r.SipUas() as uas, client(ctx, "alice", "ident") as c:
            req = c.build("MESSAGE", uri="sip:relay@" + DOMAIN, to_uri="sip:relay@" + DOMAIN,
                          headers=[("X-SSO-Token", tok), ("X-Test-Relay", uas.hostport),
                                   ("X-Test-Fail", "1")], body=b"hello")
            c.send(req)
            fwd, addr = uas.recv_request(3.0)
            if fwd is None:
                raise Fail("nothing relayed")
            uas.reply(fwd, addr, 486, "Busy Here")
            resp = c.wait_final(req, 3.0)
        eq(resp.status, 403, "final status set by the failure route")
        eq(resp.reason, "staff 1 guests -1 user alice",
           "sso_is_user_in and $sso(user) in FAILURE_ROUTE")

    # ---- asserted identity ------------------------------------------------------------

    def relay_ident(ctx, user, headers):
        return r._relay(ctx, headers, body=b"hello", user=user, instance="ident")

    @case("append_rpid_and_pai_from_claims", instance="ident")
    def t_rpid(ctx):
        tok = token(ctx)
        fwd = relay_ident(ctx, "alice", [("X-SSO-Token", tok), ("X-Test-Rpid", "1"),
                                               ("X-Test-Pai", "1"), ("X-Test-E164", "1")])
        eq(fwd.get("X-Rpid-Code"), "1", "sso_append_rpid()")
        eq(fwd.get("X-Pai-Code"), "1", "sso_append_pai()")
        eq(fwd.get("X-E164-Code"), "1", "sso_is_rpid_user_e164() for +14255550101")
        eq(fwd.get("Remote-Party-ID"),
           "<sip:+14255550101@example.com;user=phone>;party=calling;id-type=subscriber;"
           "screen=yes", "relayed Remote-Party-ID")
        eq(fwd.get("P-Asserted-Identity"), "<sip:+14255550101@example.com;user=phone>",
           "relayed P-Asserted-Identity")
        fwd = relay_ident(ctx, "alice", [("X-SSO-Token", tok), ("X-Test-Rpid", "args")])
        eq(fwd.get("Remote-Party-ID"), "<sip:+14255550101@example.com;user=phone>;screen=no",
           "Remote-Party-ID with prefix/suffix arguments")

    @case("asserted_identity_checks_values", instance="ident")
    def t_rpid_values(ctx):
        # bob's claim is a name, not a number: asserted as sip:bob-desk@domain, not E.164
        fwd = relay_ident(ctx, "bob", [("X-SSO-Token", token(ctx, "bob")),
                                             ("X-Test-Pai", "1"), ("X-Test-E164", "1")])
        eq(fwd.get("X-Pai-Code"), "1", "sso_append_pai() for bob")
        eq(fwd.get("P-Asserted-Identity"), "<sip:bob-desk@example.com>", "bob's PAI")
        eq(fwd.get("X-E164-Code"), "-1", "sso_is_rpid_user_e164() for bob-desk")
        # carol's claim tries to inject a header: refused (-2), nothing added
        fwd = relay_ident(ctx, "carol", [("X-SSO-Token", token(ctx, "carol")),
                                               ("X-Test-Rpid", "1"), ("X-Test-Pai", "1"),
                                               ("X-Test-E164", "1")])
        eq(fwd.get("X-Rpid-Code"), "-2", "sso_append_rpid() with a CRLF in the claim")
        eq(fwd.get("X-Pai-Code"), "-2", "sso_append_pai() with a CRLF in the claim")
        eq(fwd.get("X-E164-Code"), "-2", "sso_is_rpid_user_e164() with a CRLF in the claim")
        check(not fwd.has("X-Evil") and not fwd.has("Remote-Party-ID")
              and not fwd.has("P-Asserted-Identity"), "an injected header reached the wire")
        # a token without the claim: -1
        fwd = relay_ident(ctx, "alice", [("X-SSO-Token", token(
            ctx, "alice", claims={"phone_number": None})), ("X-Test-Rpid", "1")])
        eq(fwd.get("X-Rpid-Code"), "-1", "sso_append_rpid() without the claim")
        check(not fwd.has("Remote-Party-ID"), "Remote-Party-ID added without a claim")

    # ---- bind_register_to_token -------------------------------------------------------

    def contact_expires(resp, req):
        """Expires of the request's own binding in a registrar 200 OK."""
        mine = [v for (n, v) in req.headers if n == "Contact"][0]
        uri = re.search(r"<([^>]+)>", mine).group(1)
        for v in resp.get_all("Contact"):
            for part in v.split(","):
                m = re.search(r"expires=(\d+)", part)
                if uri in part and m:
                    return int(m.group(1))
        raise Fail("no Contact %s with expires in the 200 OK: %r"
                   % (uri, resp.get_all("Contact")))

    @case("register_bound_to_token_life", instance="ident")
    def t_bind(ctx):
        short = token(ctx, lifetime=120)
        plans = [
            ("Expires header 3600", dict(expires=3600), 120),
            ("Contact expires=3600", dict(contact=False, headers_extra=[
                ("Contact", "<sip:alice-param@127.0.0.1:5099>;expires=3600")]), 120),
            ("no lifetime asked (registrar default 3600)", dict(), 120),
            ("Expires header 60, shorter than the token", dict(expires=60), 60),
        ]
        for what, kw, cap in plans:
            extra = kw.pop("headers_extra", [])
            with client(ctx, "alice", "ident") as c:
                q, resp = c.request("REGISTER", headers=[("X-SSO-Token", short)] + extra,
                                    **kw)
            expect(resp, 200, 1, what)
            got = contact_expires(resp, q)
            check(cap - 3 <= got <= cap, "%s: registered for %d s, token allows %d s"
                  % (what, got, cap))
        # a long-lived token leaves the asked lifetime alone
        with client(ctx, "alice", "ident") as c:
            q, resp = c.request("REGISTER", headers=[("X-SSO-Token", token(ctx))],
                                expires=1800)
        expect(resp, 200, 1, "long-lived token")
        got = contact_expires(resp, q)
        check(1795 <= got <= 1800, "long-lived token: registered for %d s, asked 1800" % got)
