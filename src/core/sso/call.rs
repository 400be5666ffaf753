//! The SSO request a decision needs, named but not made, and its answer. The decision
//! (`authorize.rs`) returns an `SsoCall` instead of making it; a driver makes it (blocking:
//! `SsoCall::perform`; non-blocking: the async client) and hands back the `SsoAnswer`.

use super::{DigestLogin, Introspection, LoginOutcome, SsoApi, SsoError};

// Made once per SSO request and moved a few times: a Box would cost an allocation more.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum SsoCall {
    /// RFC 7662 introspection of a token.
    Introspect { token: String },
    /// A Digest answer for the SSO's token endpoint to verify.
    DigestLogin(DigestLogin),
    /// The SSO's JWK Set (https only), for local JWT validation.
    FetchJwks { url: String },
}

#[derive(Debug)]
pub enum SsoAnswer {
    Introspection(Result<Introspection, SsoError>),
    Login(Result<LoginOutcome, SsoError>),
    Jwks(Result<Vec<u8>, SsoError>),
}

impl SsoCall {
    /// Makes the call with a blocking client (the sync script functions, tests).
    pub fn perform(&self, sso: &mut dyn SsoApi) -> SsoAnswer {
        match self {
            SsoCall::Introspect { token } => SsoAnswer::Introspection(sso.introspect(token)),
            SsoCall::DigestLogin(login) => SsoAnswer::Login(sso.digest_login(login)),
            SsoCall::FetchJwks { url } => SsoAnswer::Jwks(sso.fetch_jwks(url)),
        }
    }

    /// The answer a driver gives when it could not make the call at all (no connection
    /// slot, deadline already passed, client not built).
    pub fn failed(&self, e: SsoError) -> SsoAnswer {
        match self {
            SsoCall::Introspect { .. } => SsoAnswer::Introspection(Err(e)),
            SsoCall::DigestLogin(_) => SsoAnswer::Login(Err(e)),
            SsoCall::FetchJwks { .. } => SsoAnswer::Jwks(Err(e)),
        }
    }
}

impl SsoAnswer {
    pub fn error(&self) -> Option<&SsoError> {
        match self {
            SsoAnswer::Introspection(Err(e))
            | SsoAnswer::Login(Err(e))
            | SsoAnswer::Jwks(Err(e)) => Some(e),
            _ => None,
        }
    }
}

/// What an HTTP answer is read as: the kind of call it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    Introspection,
    Login,
    Jwks,
}

impl SsoCall {
    pub fn expect(&self) -> Expect {
        match self {
            SsoCall::Introspect { .. } => Expect::Introspection,
            SsoCall::DigestLogin(_) => Expect::Login,
            SsoCall::FetchJwks { .. } => Expect::Jwks,
        }
    }
}

impl Expect {
    /// The answer for a call that ended with `e` before any HTTP answer.
    pub fn failed(self, e: SsoError) -> SsoAnswer {
        match self {
            Expect::Introspection => SsoAnswer::Introspection(Err(e)),
            Expect::Login => SsoAnswer::Login(Err(e)),
            Expect::Jwks => SsoAnswer::Jwks(Err(e)),
        }
    }
}
