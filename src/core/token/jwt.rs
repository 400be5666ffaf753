//! Local validation of JWT access tokens (RFC 7519, RFC 9068 profile), the alternative to
//! RFC 7662 introspection when the SSO issues signed JWTs.
//!
//! Keys come from the SSO's JWK Set (`jwks_url`, cached per worker in [`JwksCache`]) or from
//! a file (`jwt_key_file`: a JWK Set or one PEM public key). Only public-key algorithms
//! exist in [`JwsAlg`]: HMAC and `none` cannot even be named, which is what makes the
//! HMAC/RSA key confusion impossible. The `jsonwebtoken` crate (ring) checks signatures;
//! everything else (header rules, key choice, claims against an explicit `now`) is here, so
//! it can be tested without a clock.

use std::fmt;

use base64::alphabet;
use base64::engine::general_purpose::{
    GeneralPurpose, GeneralPurposeConfig, STANDARD, URL_SAFE_NO_PAD,
};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::{Map, Value};

use crate::core::sso::{Introspection, SsoError};

/// Longest token validated; a longer one is refused before any crypto.
pub const MAX_JWT_LEN: usize = 16 * 1024;

/// Largest `jwt_key_file` read.
pub const MAX_KEY_FILE: usize = 256 * 1024;

/// The `jwt_algorithms` default.
pub const DEFAULT_ALGORITHMS: &str = "RS256,ES256,EdDSA";

/// Default age after which the JWK Set is fetched again.
pub const DEFAULT_REFRESH_INTERVAL: u64 = 3600;

/// Default minimum gap between two fetch attempts (so at most 4 a minute per worker).
pub const DEFAULT_MIN_REFETCH_INTERVAL: u64 = 15;

/// Default seconds after which a fetch asked for and never answered counts as lost (the
/// module sets its `http_timeout`, rounded up, plus a second).
pub const DEFAULT_FETCH_BUDGET: u64 = 3;

/// How many keys a token without `kid` is tried against: bounds the signature checks one
/// forged token can cost.
const MAX_KEYS_TRIED: usize = 8;

/// How many skip reasons a key set remembers for the log.
const MAX_SKIP_REASONS: usize = 8;

/// JWK members are base64url; tolerate the padding some servers add anyway.
const B64_JWK: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

// ---- algorithms ----

/// A JWS algorithm this module verifies. Public-key algorithms only, by construction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JwsAlg {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

/// Key type, as JWK `kty` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFamily {
    Rsa,
    Ec,
    Okp,
}

/// Curve of an EC or OKP key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    P256,
    P384,
    Ed25519,
}

const ALL_ALGS: [JwsAlg; 9] = [
    JwsAlg::RS256,
    JwsAlg::RS384,
    JwsAlg::RS512,
    JwsAlg::PS256,
    JwsAlg::PS384,
    JwsAlg::PS512,
    JwsAlg::ES256,
    JwsAlg::ES384,
    JwsAlg::EdDSA,
];

impl JwsAlg {
    /// The JOSE name (case-sensitive, RFC 7518).
    pub fn name(self) -> &'static str {
        match self {
            JwsAlg::RS256 => "RS256",
            JwsAlg::RS384 => "RS384",
            JwsAlg::RS512 => "RS512",
            JwsAlg::PS256 => "PS256",
            JwsAlg::PS384 => "PS384",
            JwsAlg::PS512 => "PS512",
            JwsAlg::ES256 => "ES256",
            JwsAlg::ES384 => "ES384",
            JwsAlg::EdDSA => "EdDSA",
        }
    }

    pub fn from_name(name: &str) -> Option<JwsAlg> {
        ALL_ALGS.into_iter().find(|a| a.name() == name)
    }

    pub fn family(self) -> KeyFamily {
        match self {
            JwsAlg::ES256 | JwsAlg::ES384 => KeyFamily::Ec,
            JwsAlg::EdDSA => KeyFamily::Okp,
            _ => KeyFamily::Rsa,
        }
    }

    /// The curve the algorithm is defined on (RFC 7518 3.4 ties ES256 to P-256 etc.).
    fn curve(self) -> Option<Curve> {
        match self {
            JwsAlg::ES256 => Some(Curve::P256),
            JwsAlg::ES384 => Some(Curve::P384),
            JwsAlg::EdDSA => Some(Curve::Ed25519),
            _ => None,
        }
    }

    fn to_jsonwebtoken(self) -> Algorithm {
        match self {
            JwsAlg::RS256 => Algorithm::RS256,
            JwsAlg::RS384 => Algorithm::RS384,
            JwsAlg::RS512 => Algorithm::RS512,
            JwsAlg::PS256 => Algorithm::PS256,
            JwsAlg::PS384 => Algorithm::PS384,
            JwsAlg::PS512 => Algorithm::PS512,
            JwsAlg::ES256 => Algorithm::ES256,
            JwsAlg::ES384 => Algorithm::ES384,
            JwsAlg::EdDSA => Algorithm::EdDSA,
        }
    }
}

impl fmt::Display for JwsAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Parses an allow-list such as `"RS256,ES256,EdDSA"` (the `jwt_algorithms` modparam).
pub fn parse_algorithms(list: &str) -> Result<Vec<JwsAlg>, String> {
    let mut out = Vec::new();
    for item in list.split(',').map(str::trim) {
        if item.is_empty() {
            return Err("empty algorithm name in the list".to_string());
        }
        if item.eq_ignore_ascii_case("none") {
            return Err("`none` is never accepted: tokens must be signed".to_string());
        }
        if item
            .as_bytes()
            .get(..2)
            .is_some_and(|p| p.eq_ignore_ascii_case(b"HS"))
        {
            return Err(format!(
                "{} is HMAC, which is never accepted (public-key algorithms only, so a public \
                 key can never be used as an HMAC secret)",
                printable(item)
            ));
        }
        match JwsAlg::from_name(item) {
            Some(a) if !out.contains(&a) => out.push(a),
            Some(_) => {}
            None => {
                let names: Vec<&str> = ALL_ALGS.iter().map(|a| a.name()).collect();
                return Err(format!(
                    "unknown algorithm {} (case-sensitive; supported: {})",
                    printable(item),
                    names.join(", ")
                ));
            }
        }
    }
    Ok(out)
}

/// What a token must satisfy besides its signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtPolicy {
    pub algorithms: Vec<JwsAlg>,
    /// Required `iss` when set.
    pub issuer: Option<String>,
    /// Required member of `aud` when set.
    pub audience: Option<String>,
    /// Seconds of clock skew tolerated on `exp`, `nbf` and `iat`.
    pub leeway: u64,
}

impl Default for JwtPolicy {
    fn default() -> JwtPolicy {
        JwtPolicy {
            algorithms: parse_algorithms(DEFAULT_ALGORITHMS).unwrap_or_default(),
            issuer: None,
            audience: None,
            leeway: 30,
        }
    }
}

// ---- errors ----

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtError {
    /// Not a compact JWS with a JSON header carrying `alg`: use introspection instead.
    NotAJwt,
    /// No key for the token's `kid` (or, without a kid, for its algorithm): a fresh JWK Set
    /// may have it.
    UnknownKey { kid: Option<String> },
    /// The token is a JWT and is not acceptable; a short reason for the log.
    Invalid(String),
    /// No key set could be loaded yet (JWKS fetch failing): our side, not the token's fault.
    NoKeys(String),
}

impl fmt::Display for JwtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JwtError::NotAJwt => f.write_str("not a JWT"),
            JwtError::UnknownKey { kid: Some(kid) } => {
                write!(f, "no key with kid {}", printable(kid))
            }
            JwtError::UnknownKey { kid: None } => {
                f.write_str("no key for the token's algorithm (token has no kid)")
            }
            JwtError::Invalid(why) => write!(f, "invalid JWT: {why}"),
            JwtError::NoKeys(why) => write!(f, "no JWT keys available: {why}"),
        }
    }
}

fn invalid(why: impl Into<String>) -> JwtError {
    JwtError::Invalid(why.into())
}

/// Token-supplied text made safe for a log line: bounded and escaped.
fn printable(s: &str) -> String {
    const MAX: usize = 64;
    if s.len() <= MAX {
        return format!("{s:?}");
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}…", &s[..end])
}

// ---- keys ----

/// Public key material as read from PEM/DER or a JWK, before it becomes a [`Key`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum PublicKeyData {
    /// Big-endian modulus (no leading zero) and exponent.
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// Uncompressed point `04 || x || y`.
    Ec {
        curve: Curve,
        point: Vec<u8>,
    },
    Ed25519(Vec<u8>),
}

/// One verification key.
#[derive(Clone)]
pub struct Key {
    kid: Option<String>,
    family: KeyFamily,
    curve: Option<Curve>,
    /// The JWK's `alg`, when it declared one.
    alg: Option<JwsAlg>,
    decoding: DecodingKey,
}

impl Key {
    fn new(kid: Option<String>, alg: Option<JwsAlg>, data: PublicKeyData) -> Result<Key, String> {
        let (family, curve, decoding) = match data {
            PublicKeyData::Rsa { n, e } => {
                let bits = bit_len(&n);
                // ring verifies 2048..=8192-bit moduli only; say so now rather than
                // failing every token later.
                if !(2048..=8192).contains(&bits) {
                    return Err(format!("RSA key of {bits} bits (2048 to 8192 accepted)"));
                }
                if e.is_empty() || e.len() > 4 {
                    return Err("RSA public exponent out of range".to_string());
                }
                (
                    KeyFamily::Rsa,
                    None,
                    DecodingKey::from_rsa_raw_components(&n, &e),
                )
            }
            PublicKeyData::Ec { curve, point } => {
                let want = match curve {
                    Curve::P256 => 65,
                    Curve::P384 => 97,
                    Curve::Ed25519 => 0,
                };
                if point.len() != want || point[0] != 4 {
                    return Err("EC key is not an uncompressed point of its curve".to_string());
                }
                (KeyFamily::Ec, Some(curve), DecodingKey::from_ec_der(&point))
            }
            PublicKeyData::Ed25519(x) => {
                if x.len() != 32 {
                    return Err("Ed25519 key is not 32 bytes".to_string());
                }
                (
                    KeyFamily::Okp,
                    Some(Curve::Ed25519),
                    DecodingKey::from_ed_der(&x),
                )
            }
        };
        if let Some(a) = alg {
            if a.family() != family || a.curve() != curve {
                return Err(format!("alg {a} does not fit the key type"));
            }
        }
        Ok(Key {
            kid,
            family,
            curve,
            alg,
            decoding,
        })
    }

    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    pub fn family(&self) -> KeyFamily {
        self.family
    }

    pub fn alg(&self) -> Option<JwsAlg> {
        self.alg
    }

    /// Whether a token signed with `alg` may be checked with this key.
    fn fits(&self, alg: JwsAlg) -> bool {
        alg.family() == self.family
            && alg.curve() == self.curve
            && self.alg.is_none_or(|a| a == alg)
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("family", &self.family)
            .field("curve", &self.curve)
            .field("alg", &self.alg)
            .finish()
    }
}

fn bit_len(n: &[u8]) -> usize {
    match n.first() {
        None => 0,
        Some(&b) => n.len() * 8 - b.leading_zeros() as usize,
    }
}

/// The verification keys in force, from a JWK Set or a key file.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: Vec<Key>,
    skipped: usize,
    skip_reasons: Vec<String>,
}

impl KeySet {
    /// Reads an RFC 7517 JWK Set. Keys this module cannot or must not use (not for
    /// signatures, symmetric, unknown curve or algorithm, too small) are skipped and counted;
    /// a set with no usable key is an error.
    pub fn from_jwks_json(json: &[u8]) -> Result<KeySet, String> {
        let doc: Value =
            serde_json::from_slice(json).map_err(|_| "JWK Set is not valid JSON".to_string())?;
        let Some(Value::Array(list)) = doc.get("keys") else {
            return Err("JWK Set has no `keys` array".to_string());
        };
        let mut set = KeySet::default();
        for jwk in list {
            match key_from_jwk(jwk) {
                Ok(key) => set.keys.push(key),
                Err(why) => set.skip(why),
            }
        }
        if set.keys.is_empty() {
            return Err(format!(
                "JWK Set has no usable key ({})",
                set.skipped_text()
            ));
        }
        Ok(set)
    }

    /// Reads `jwt_key_file`: a JWK Set, a single JWK, or PEM public keys ("PUBLIC KEY" for
    /// RSA, EC P-256/P-384 and Ed25519; "RSA PUBLIC KEY"). The operator chose this file, so
    /// anything unusable in a PEM file is an error rather than skipped.
    pub fn from_file_contents(data: &[u8]) -> Result<KeySet, String> {
        if data.len() > MAX_KEY_FILE {
            return Err(format!("key file larger than {MAX_KEY_FILE} bytes"));
        }
        let text = std::str::from_utf8(data)
            .map_err(|_| "key file is not text (want a JWK Set or a PEM public key)")?;
        let trimmed = text.trim_start();
        if trimmed.starts_with('{') {
            let doc: Value = serde_json::from_str(trimmed)
                .map_err(|_| "key file is not valid JSON".to_string())?;
            if doc.get("keys").is_some() {
                return KeySet::from_jwks_json(trimmed.as_bytes());
            }
            let key = key_from_jwk(&doc).map_err(|why| format!("key file JWK: {why}"))?;
            return Ok(KeySet {
                keys: vec![key],
                ..KeySet::default()
            });
        }
        if !text.contains("-----BEGIN ") {
            return Err("key file is neither JSON (JWK Set) nor PEM".to_string());
        }
        let mut set = KeySet::default();
        for block in pem_blocks(text)? {
            let (label, der) = block;
            let data = match label.as_str() {
                "PUBLIC KEY" => spki_public_key(&der)?,
                "RSA PUBLIC KEY" => {
                    let (n, e) = rsa_public_key(&der)?;
                    PublicKeyData::Rsa { n, e }
                }
                l if l.contains("PRIVATE KEY") => {
                    return Err("key file holds a private key: give the public key only \
                                (openssl pkey -in KEY -pubout)"
                        .to_string())
                }
                "CERTIFICATE" => {
                    return Err("key file holds a certificate: give its public key \
                                (openssl x509 -in CERT -pubkey -noout)"
                        .to_string())
                }
                other => return Err(format!("unsupported PEM block {}", printable(other))),
            };
            set.keys.push(Key::new(None, None, data)?);
        }
        if set.keys.is_empty() {
            return Err("key file has no PEM block".to_string());
        }
        Ok(set)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn keys(&self) -> &[Key] {
        &self.keys
    }

    /// Keys of the source that were left out.
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// One line for the log: what was loaded and what was skipped and why.
    pub fn summary(&self) -> String {
        let kids: Vec<String> = self
            .keys
            .iter()
            .map(|k| {
                let kid = k.kid.as_deref().map_or("(no kid)".to_string(), printable);
                match k.alg {
                    Some(a) => format!("{kid} {:?}/{a}", k.family),
                    None => format!("{kid} {:?}", k.family),
                }
            })
            .collect();
        let mut s = format!("{} key(s): {}", self.keys.len(), kids.join(", "));
        if self.skipped > 0 {
            s.push_str(&format!("; {}", self.skipped_text()));
        }
        s
    }

    fn skip(&mut self, why: String) {
        self.skipped += 1;
        if self.skip_reasons.len() < MAX_SKIP_REASONS {
            self.skip_reasons.push(why);
        }
    }

    fn skipped_text(&self) -> String {
        let more = self.skipped - self.skip_reasons.len();
        let mut s = format!("{} skipped", self.skipped);
        if !self.skip_reasons.is_empty() {
            s.push_str(": ");
            s.push_str(&self.skip_reasons.join("; "));
        }
        if more > 0 {
            s.push_str(&format!("; and {more} more"));
        }
        s
    }
}

/// One JWK → a usable verification key, or why not.
fn key_from_jwk(jwk: &Value) -> Result<Key, String> {
    let Value::Object(m) = jwk else {
        return Err("a key that is not a JSON object".to_string());
    };
    let kid = match m.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err("a key whose kid is not a string".to_string()),
    };
    let name = kid.as_deref().map_or("(no kid)".to_string(), printable);
    let fail = |why: &str| Err(format!("{name}: {why}"));
    let kty = m.get("kty").and_then(Value::as_str).unwrap_or("");
    if kty == "oct" {
        return fail("symmetric key (kty oct) never used");
    }
    match m.get("use") {
        None => {}
        Some(Value::String(u)) if u == "sig" => {}
        Some(_) => return fail("not a signature key (use is not \"sig\")"),
    }
    if let Some(ops) = m.get("key_ops") {
        let verify = ops
            .as_array()
            .is_some_and(|ops| ops.iter().any(|o| o == "verify"));
        if !verify {
            return fail("key_ops without \"verify\"");
        }
    }
    let alg = match m.get("alg") {
        None => None,
        Some(Value::String(a)) => match JwsAlg::from_name(a) {
            Some(a) => Some(a),
            None => return fail(&format!("alg {} not supported", printable(a))),
        },
        Some(_) => return fail("alg is not a string"),
    };
    let member = |k: &str| -> Result<Vec<u8>, String> {
        match m.get(k) {
            Some(Value::String(s)) => B64_JWK
                .decode(s)
                .map_err(|_| format!("{name}: `{k}` is not base64url")),
            _ => Err(format!("{name}: `{k}` missing")),
        }
    };
    let data = match kty {
        "RSA" => {
            let mut n = member("n")?;
            let first = n.iter().position(|&b| b != 0).unwrap_or(n.len());
            n.drain(..first);
            let mut e = member("e")?;
            let first = e.iter().position(|&b| b != 0).unwrap_or(e.len());
            e.drain(..first);
            PublicKeyData::Rsa { n, e }
        }
        "EC" => {
            let (curve, len) = match m.get("crv").and_then(Value::as_str) {
                Some("P-256") => (Curve::P256, 32),
                Some("P-384") => (Curve::P384, 48),
                _ => return fail("unsupported EC curve"),
            };
            let (x, y) = (member("x")?, member("y")?);
            if x.len() != len || y.len() != len {
                return fail("EC coordinates of the wrong size");
            }
            let mut point = Vec::with_capacity(1 + 2 * len);
            point.push(4);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            PublicKeyData::Ec { curve, point }
        }
        "OKP" => match m.get("crv").and_then(Value::as_str) {
            Some("Ed25519") => PublicKeyData::Ed25519(member("x")?),
            _ => return fail("unsupported OKP curve (Ed25519 only)"),
        },
        _ => return fail("unsupported kty"),
    };
    Key::new(kid, alg, data).map_err(|why| format!("{name}: {why}"))
}

// ---- PEM and the little DER it needs ----

/// The PEM blocks of a text, as (label, DER). Text outside blocks is ignored.
fn pem_blocks(text: &str) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut out = Vec::new();
    let mut lines = text.lines().map(str::trim);
    while let Some(line) = lines.next() {
        let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        else {
            continue;
        };
        let end = format!("-----END {label}-----");
        let mut b64 = String::new();
        loop {
            match lines.next() {
                None => return Err(format!("PEM block {} has no END line", printable(label))),
                Some(l) if l == end => break,
                // RFC 1421 headers: an encrypted key, which cannot be a public key anyway.
                Some(l) if l.contains(':') => {
                    return Err("encrypted or annotated PEM is not supported".to_string())
                }
                Some(l) => b64.push_str(l),
            }
        }
        let der = STANDARD
            .decode(b64.as_bytes())
            .map_err(|_| format!("PEM block {} is not valid base64", printable(label)))?;
        out.push((label.to_string(), der));
    }
    Ok(out)
}

/// Takes one DER element with `tag` off the front of `input` and returns its contents.
/// Definite, minimal lengths only.
fn der_take<'a>(input: &mut &'a [u8], tag: u8) -> Result<&'a [u8], String> {
    let bad = || Err("malformed DER in the public key".to_string());
    let whole: &'a [u8] = input;
    let &[t, l0, ref rest @ ..] = whole else {
        return bad();
    };
    if t != tag {
        return bad();
    }
    let (len, rest) = if l0 < 0x80 {
        (l0 as usize, rest)
    } else {
        let n = (l0 & 0x7f) as usize;
        if n == 0 || n > 3 || rest.len() < n || rest[0] == 0 {
            return bad();
        }
        let len = rest[..n].iter().fold(0usize, |a, &b| (a << 8) | b as usize);
        if len < 0x80 {
            return bad();
        }
        (len, &rest[n..])
    };
    if rest.len() < len {
        return bad();
    }
    let (body, after) = rest.split_at(len);
    *input = after;
    Ok(body)
}

/// A non-negative DER INTEGER as big-endian bytes without leading zeros.
fn der_uint(input: &mut &[u8]) -> Result<Vec<u8>, String> {
    let v = der_take(input, 0x02)?;
    if v.first().is_none_or(|&b| b & 0x80 != 0) {
        return Err("malformed or negative integer in the RSA key".to_string());
    }
    let first = v.iter().position(|&b| b != 0).unwrap_or(v.len());
    Ok(v[first..].to_vec())
}

/// PKCS#1 RSAPublicKey: SEQUENCE { n INTEGER, e INTEGER }.
fn rsa_public_key(der: &[u8]) -> Result<(Vec<u8>, Vec<u8>), String> {
    let mut outer = der;
    let mut seq = der_take(&mut outer, 0x30)?;
    let n = der_uint(&mut seq)?;
    let e = der_uint(&mut seq)?;
    if !outer.is_empty() || !seq.is_empty() {
        return Err("trailing data in the RSA key".to_string());
    }
    Ok((n, e))
}

const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_EC: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];

/// X.509 SubjectPublicKeyInfo (a PEM "PUBLIC KEY").
fn spki_public_key(der: &[u8]) -> Result<PublicKeyData, String> {
    let mut outer = der;
    let mut spki = der_take(&mut outer, 0x30)?;
    let mut alg = der_take(&mut spki, 0x30)?;
    let bits = der_take(&mut spki, 0x03)?;
    if !outer.is_empty() || !spki.is_empty() {
        return Err("trailing data in the public key".to_string());
    }
    let key = match bits {
        [0, key @ ..] => key,
        _ => return Err("malformed DER in the public key".to_string()),
    };
    let oid = der_take(&mut alg, 0x06)?;
    match oid {
        _ if oid == OID_RSA => {
            // parameters: NULL, or absent
            if !(alg.is_empty() || alg == [0x05, 0x00]) {
                return Err("malformed RSA key parameters".to_string());
            }
            let (n, e) = rsa_public_key(key)?;
            Ok(PublicKeyData::Rsa { n, e })
        }
        _ if oid == OID_EC => {
            let curve = der_take(&mut alg, 0x06)?;
            let curve = match curve {
                _ if curve == OID_P256 => Curve::P256,
                _ if curve == OID_P384 => Curve::P384,
                _ => return Err("unsupported EC curve (P-256 and P-384 only)".to_string()),
            };
            Ok(PublicKeyData::Ec {
                curve,
                point: key.to_vec(),
            })
        }
        _ if oid == OID_ED25519 && alg.is_empty() => Ok(PublicKeyData::Ed25519(key.to_vec())),
        _ => Err("unsupported public key type (RSA, EC P-256/P-384, Ed25519 only)".to_string()),
    }
}

// ---- tokens ----

/// The parts of a compact JWS this module looks at before any key is involved.
struct Parsed<'a> {
    alg_name: String,
    header: Map<String, Value>,
    /// `header.payload`, what the signature covers.
    signing_input: &'a str,
    payload: &'a str,
    signature: &'a str,
}

fn is_b64url(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Compact serialization, base64url parts, a JSON-object header with a string `alg`.
fn parse(token: &str) -> Result<Parsed<'_>, JwtError> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::NotAJwt);
    };
    // An empty signature is allowed here so that an unsecured (`alg: none`) JWT is named
    // and refused as such rather than taken for an opaque token.
    if !(is_b64url(h) && is_b64url(p) && (s.is_empty() || is_b64url(s))) {
        return Err(JwtError::NotAJwt);
    }
    let raw = URL_SAFE_NO_PAD.decode(h).map_err(|_| JwtError::NotAJwt)?;
    let Ok(Value::Object(header)) = serde_json::from_slice::<Value>(&raw) else {
        return Err(JwtError::NotAJwt);
    };
    let Some(Value::String(alg_name)) = header.get("alg") else {
        return Err(JwtError::NotAJwt);
    };
    // Checked here, before the caller may fetch keys for it.
    if token.len() > MAX_JWT_LEN {
        return Err(invalid(format!("token longer than {MAX_JWT_LEN} bytes")));
    }
    Ok(Parsed {
        alg_name: alg_name.clone(),
        header,
        signing_input: &token[..h.len() + 1 + p.len()],
        payload: p,
        signature: s,
    })
}

/// Cheap shape test that decides between local validation and introspection: three
/// base64url parts (only the signature may be empty), the first a JSON object with a
/// string `alg`.
pub fn looks_like_jwt(token: &str) -> bool {
    !matches!(parse(token), Err(JwtError::NotAJwt))
}

/// Validates a JWT access token at time `now` (Unix seconds) and returns it as an
/// introspection result: `user` from `username`, `preferred_username`, then `sub`; `scope`
/// from `scope` or a `scp` list; `claims` is the whole payload.
pub fn validate(
    token: &str,
    keys: &KeySet,
    policy: &JwtPolicy,
    now: u64,
) -> Result<Introspection, JwtError> {
    let parsed = parse(token)?;
    check(&parsed, keys, policy, now)
}

fn check(
    t: &Parsed<'_>,
    keys: &KeySet,
    policy: &JwtPolicy,
    now: u64,
) -> Result<Introspection, JwtError> {
    let alg = check_header(t, policy)?;
    let kid = match t.header.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.as_str()),
        Some(_) => return Err(invalid("kid is not a string")),
    };
    verify_signature(t, alg, kid, keys)?;
    let raw = URL_SAFE_NO_PAD
        .decode(t.payload)
        .map_err(|_| invalid("payload is not base64url"))?;
    let Ok(Value::Object(claims)) = serde_json::from_slice::<Value>(&raw) else {
        return Err(invalid("payload is not a JSON object"));
    };
    let exp = check_claims(&claims, policy, now)?;
    let user = ["username", "preferred_username", "sub"]
        .iter()
        .find_map(|k| {
            claims
                .get(*k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        })
        .map(str::to_string);
    let scope = match (claims.get("scope"), claims.get("scp")) {
        (Some(Value::String(s)), _) => Some(s.clone()),
        (_, Some(Value::String(s))) => Some(s.clone()),
        (_, Some(Value::Array(list))) => Some(
            list.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" "),
        ),
        _ => None,
    };
    Ok(Introspection {
        active: true,
        user,
        exp: Some(exp),
        scope,
        claims: claims.into(),
    })
}

/// `alg` allowed, no extensions we would have to understand, an access-token `typ`.
fn check_header(t: &Parsed<'_>, policy: &JwtPolicy) -> Result<JwsAlg, JwtError> {
    let name = t.alg_name.as_str();
    let Some(alg) = JwsAlg::from_name(name) else {
        let why = if name.eq_ignore_ascii_case("none") {
            "alg none (unsigned token)".to_string()
        } else if name
            .as_bytes()
            .get(..2)
            .is_some_and(|p| p.eq_ignore_ascii_case(b"HS"))
        {
            format!("HMAC alg {} never accepted", printable(name))
        } else {
            format!("unsupported alg {}", printable(name))
        };
        return Err(invalid(why));
    };
    if !policy.algorithms.contains(&alg) {
        return Err(invalid(format!("alg {alg} not in jwt_algorithms")));
    }
    // RFC 7515 4.1.11: extensions listed in crit must be understood; we understand none.
    if t.header.contains_key("crit") {
        return Err(invalid("critical header extensions not supported"));
    }
    match t.header.get("typ") {
        None => {}
        Some(Value::String(typ))
            if ["JWT", "at+jwt", "application/at+jwt"]
                .iter()
                .any(|ok| typ.eq_ignore_ascii_case(ok)) => {}
        Some(_) => return Err(invalid("typ is not JWT or at+jwt")),
    }
    Ok(alg)
}

/// Chooses the key(s) and checks the signature. Keys offered by the token itself (`jwk`,
/// `jku`, `x5u`, `x5c` headers) are never looked at.
fn verify_signature(
    t: &Parsed<'_>,
    alg: JwsAlg,
    kid: Option<&str>,
    keys: &KeySet,
) -> Result<(), JwtError> {
    let verify = |key: &Key| -> Result<bool, JwtError> {
        jsonwebtoken::crypto::verify(
            t.signature,
            t.signing_input.as_bytes(),
            &key.decoding,
            alg.to_jsonwebtoken(),
        )
        .map_err(|_| invalid("signature is not base64url"))
    };
    let unknown = || JwtError::UnknownKey {
        kid: kid.map(str::to_string),
    };
    if let Some(kid) = kid {
        let named = |k: &&Key| k.kid.as_deref() == Some(kid);
        if keys.keys.iter().any(|k| named(&k)) {
            // The key the token names decides; a key of another type under that kid is a
            // mismatch, not a reason to try other keys.
            let mut fitting = keys
                .keys
                .iter()
                .filter(named)
                .filter(|k| k.fits(alg))
                .take(MAX_KEYS_TRIED)
                .peekable();
            if fitting.peek().is_none() {
                return Err(invalid(format!(
                    "key {} does not fit alg {alg}",
                    printable(kid)
                )));
            }
            for key in fitting {
                if verify(key)? {
                    return Ok(());
                }
            }
            return Err(invalid("bad signature"));
        }
        // A key without kid (a PEM key file) stands for any kid.
        for key in keys
            .keys
            .iter()
            .filter(|k| k.kid.is_none() && k.fits(alg))
            .take(MAX_KEYS_TRIED)
        {
            if verify(key)? {
                return Ok(());
            }
        }
        return Err(unknown());
    }
    let mut tried = false;
    for key in keys
        .keys
        .iter()
        .filter(|k| k.fits(alg))
        .take(MAX_KEYS_TRIED)
    {
        tried = true;
        if verify(key)? {
            return Ok(());
        }
    }
    if tried {
        Err(invalid("bad signature"))
    } else {
        Err(unknown())
    }
}

/// A NumericDate (RFC 7519 2): seconds, possibly fractional.
fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<i64>, JwtError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(v) = n.as_i64() {
                Ok(Some(v))
            } else if n.as_u64().is_some() {
                Ok(Some(i64::MAX))
            } else {
                // `as` saturates, and the f64 here is finite (serde_json has no NaN).
                Ok(n.as_f64().map(|f| f.floor() as i64))
            }
        }
        Some(_) => Err(invalid(format!("{name} is not a number"))),
    }
}

/// Time, issuer and audience; returns `exp`.
fn check_claims(
    claims: &Map<String, Value>,
    policy: &JwtPolicy,
    now: u64,
) -> Result<i64, JwtError> {
    let now = i64::try_from(now).unwrap_or(i64::MAX);
    let leeway = i64::try_from(policy.leeway).unwrap_or(i64::MAX);
    // RFC 9068 2.2: exp is required in an access token.
    let exp = numeric_date(claims, "exp")?.ok_or_else(|| invalid("no exp"))?;
    if now >= exp.saturating_add(leeway) {
        return Err(invalid("expired"));
    }
    if numeric_date(claims, "nbf")?.is_some_and(|nbf| nbf > now.saturating_add(leeway)) {
        return Err(invalid("not valid yet (nbf)"));
    }
    if numeric_date(claims, "iat")?.is_some_and(|iat| iat > now.saturating_add(leeway)) {
        return Err(invalid("issued in the future (iat)"));
    }
    if let Some(want) = &policy.issuer {
        match claims.get("iss") {
            Some(Value::String(iss)) if iss == want => {}
            Some(_) => return Err(invalid("wrong issuer")),
            None => return Err(invalid("no iss")),
        }
    }
    if let Some(want) = &policy.audience {
        let ok = match claims.get("aud") {
            Some(Value::String(aud)) => aud == want,
            Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(want)),
            None => return Err(invalid("no aud")),
            Some(_) => false,
        };
        if !ok {
            return Err(invalid("audience not accepted"));
        }
    }
    Ok(exp)
}

// ---- the per-worker JWKS cache ----

/// Fetches the JWK Set body (in the module: `sso::fetch_jwks` on the worker's client).
pub type JwksFetch<'a> = dyn FnMut() -> Result<Vec<u8>, SsoError> + 'a;

/// One worker's JWK Set: fetched on first use, again when older than `refresh_interval`,
/// and early when a token names an unknown key, but never two attempts within
/// `min_refetch_interval` (so neither a dead SSO nor tokens with made-up kids turn into a
/// request flood). A failed fetch keeps the keys already held.
#[derive(Debug)]
pub struct JwksCache {
    keys: Option<KeySet>,
    fetched_at: u64,
    last_attempt: Option<u64>,
    last_error: Option<String>,
    refresh_interval: u64,
    min_refetch_interval: u64,
    /// A fetch `check` asked for has not been answered through `fetched` yet: the second
    /// by which its answer is due (`fetch_budget` after it was asked for). A request that
    /// finds no keys meanwhile waits for it instead of failing. Past that second the fetch
    /// is lost (its request was dropped unanswered): the next check may start another one
    /// at once, rate limit or not, rather than leave JWTs failing until the limit lapses.
    fetch_in_flight: Option<u64>,
    /// Seconds a fetch may take before it counts as lost: its request's whole budget.
    fetch_budget: u64,
}

impl Default for JwksCache {
    fn default() -> JwksCache {
        JwksCache::new(DEFAULT_REFRESH_INTERVAL, DEFAULT_MIN_REFETCH_INTERVAL)
    }
}

impl JwksCache {
    pub fn new(refresh_interval: u64, min_refetch_interval: u64) -> JwksCache {
        JwksCache {
            keys: None,
            fetched_at: 0,
            last_attempt: None,
            last_error: None,
            refresh_interval,
            min_refetch_interval,
            fetch_in_flight: None,
            fetch_budget: DEFAULT_FETCH_BUDGET,
        }
    }

    /// Seconds after which a fetch asked for and never answered counts as lost (at least 1).
    pub fn with_fetch_budget(mut self, seconds: u64) -> JwksCache {
        self.fetch_budget = seconds.max(1);
        self
    }

    /// Marks a fetch as asked for (the attempt the rate limit counts).
    fn start_fetch(&mut self, now: u64) {
        self.last_attempt = Some(now);
        self.fetch_in_flight = Some(now + self.fetch_budget);
    }

    /// Forgets a fetch in flight whose answer is overdue (a clock that stepped back
    /// counts as overdue too); true when it did.
    fn forget_lost_fetch(&mut self, now: u64) -> bool {
        match self.fetch_in_flight {
            Some(due) if now >= due || now + self.fetch_budget < due => {
                self.fetch_in_flight = None;
                true
            }
            _ => false,
        }
    }

    /// The keys held, without fetching.
    pub fn current(&self) -> Option<&KeySet> {
        self.keys.as_ref()
    }

    /// When the keys held were fetched.
    pub fn fetched_at(&self) -> Option<u64> {
        self.keys.as_ref().map(|_| self.fetched_at)
    }

    /// Why the last attempt failed; cleared by a successful one.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    fn may_attempt(&self, now: u64) -> bool {
        match self.last_attempt {
            None => true,
            // A clock that stepped back must not freeze the cache until it catches up.
            Some(last) => now < last || now - last >= self.min_refetch_interval,
        }
    }

    /// Whether the keys held are due for a refresh (none yet, older than the interval, or
    /// a clock that stepped back, as in `may_attempt`).
    fn due(&self, now: u64) -> bool {
        match &self.keys {
            None => true,
            Some(_) => now < self.fetched_at || now - self.fetched_at >= self.refresh_interval,
        }
    }

    /// One fetch attempt made on the spot (`keys`, `validate_with_refresh`).
    fn refetch(&mut self, now: u64, fetch: &mut JwksFetch<'_>) -> bool {
        self.last_attempt = Some(now);
        self.note_fetch(now, fetch())
    }

    /// The outcome of a fetch attempt: on success the keys are replaced, on failure kept.
    /// The attempt itself was counted when it was asked for (`last_attempt`).
    fn note_fetch(&mut self, now: u64, body: Result<Vec<u8>, SsoError>) -> bool {
        self.fetch_in_flight = None;
        let result = body
            .map_err(|e| describe_fetch_error(&e))
            .and_then(|body| KeySet::from_jwks_json(&body));
        match result {
            Ok(set) => {
                self.keys = Some(set);
                self.fetched_at = now;
                self.last_error = None;
                true
            }
            Err(why) => {
                self.last_error = Some(why);
                false
            }
        }
    }

    /// The keys to validate with, fetching first when there are none or they are due for
    /// a refresh (and the rate limit allows).
    pub fn keys(&mut self, now: u64, fetch: &mut JwksFetch<'_>) -> Result<&KeySet, JwtError> {
        if self.due(now) && self.may_attempt(now) {
            self.refetch(now, fetch);
        }
        self.held()
    }

    fn held(&self) -> Result<&KeySet, JwtError> {
        self.keys.as_ref().ok_or_else(|| {
            JwtError::NoKeys(
                self.last_error
                    .clone()
                    .unwrap_or_else(|| "JWK Set not fetched yet".to_string()),
            )
        })
    }

    /// First step of a validation that does not fetch by itself: a verdict from the keys
    /// held, or the fetch that must come first (then hand its body to [`Self::fetched`]).
    /// Asking for a fetch counts as the attempt, so the rate limit holds even when several
    /// validations are in progress at once or the fetch is never made.
    pub fn check(&mut self, token: &str, policy: &JwtPolicy, now: u64) -> JwksCheck {
        let parsed = match parse(token) {
            Ok(p) => p,
            Err(e) => return JwksCheck::Verdict(Err(e)),
        };
        let lost = self.forget_lost_fetch(now);
        if self.due(now) && (self.may_attempt(now) || lost) {
            self.start_fetch(now);
            return JwksCheck::Fetch(JwksFetchReason::Due);
        }
        if self.keys.is_none() && self.fetch_in_flight.is_some() {
            return JwksCheck::Wait;
        }
        self.verdict(&parsed, policy, now, true)
    }

    /// Second step: the fetched body (or why there is none) for the fetch `check` asked for.
    /// After a refresh that was due, a token naming an unknown key may ask for one more
    /// fetch (rate limit permitting), as `validate_with_refresh` does; never a third.
    pub fn fetched(
        &mut self,
        token: &str,
        policy: &JwtPolicy,
        now: u64,
        reason: JwksFetchReason,
        body: Result<Vec<u8>, SsoError>,
    ) -> JwksCheck {
        self.note_fetch(now, body);
        match parse(token) {
            Ok(parsed) => self.verdict(&parsed, policy, now, reason == JwksFetchReason::Due),
            Err(e) => JwksCheck::Verdict(Err(e)),
        }
    }

    fn verdict(
        &mut self,
        parsed: &Parsed<'_>,
        policy: &JwtPolicy,
        now: u64,
        may_refetch: bool,
    ) -> JwksCheck {
        let first = match self.held() {
            Ok(keys) => check(parsed, keys, policy, now),
            Err(e) => return JwksCheck::Verdict(Err(e)),
        };
        if may_refetch && matches!(first, Err(JwtError::UnknownKey { .. })) && self.may_attempt(now)
        {
            self.start_fetch(now);
            return JwksCheck::Fetch(JwksFetchReason::UnknownKey);
        }
        JwksCheck::Verdict(first)
    }

    /// [`validate`] with the cached keys; a token naming an unknown key gets one refetch
    /// (rate limit permitting) and a second try. A non-JWT never causes a fetch. The
    /// blocking form of `check` / `fetched`.
    pub fn validate_with_refresh(
        &mut self,
        token: &str,
        policy: &JwtPolicy,
        now: u64,
        fetch: &mut JwksFetch<'_>,
    ) -> Result<Introspection, JwtError> {
        let mut step = self.check(token, policy, now);
        loop {
            match step {
                JwksCheck::Verdict(v) => return v,
                JwksCheck::Fetch(reason) => {
                    step = self.fetched(token, policy, now, reason, fetch());
                }
                // The fetch in flight cannot finish while this caller blocks: fetch here.
                JwksCheck::Wait => {
                    step = self.fetched(token, policy, now, JwksFetchReason::Due, fetch());
                }
            }
        }
    }
}

/// What [`JwksCache::check`] decided.
#[derive(Debug)]
pub enum JwksCheck {
    Verdict(Result<Introspection, JwtError>),
    /// Fetch the JWK Set and hand the result to [`JwksCache::fetched`] with this reason.
    Fetch(JwksFetchReason),
    /// No keys yet, and another request of this worker is fetching them: `check` again
    /// later (by the caller's deadline).
    Wait,
}

/// Why a fetch was asked for: the keys were due, or (after that) the token named a key the
/// set lacked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwksFetchReason {
    Due,
    UnknownKey,
}

fn describe_fetch_error(e: &SsoError) -> String {
    match e {
        SsoError::NotConfigured => "jwks_url not configured".to_string(),
        SsoError::Unreachable(m) => format!("JWKS unreachable: {m}"),
        SsoError::Timeout => "JWKS fetch timed out".to_string(),
        SsoError::Status(s) => format!("JWKS fetch answered HTTP {s}"),
        SsoError::Malformed(w) => format!("malformed JWKS answer: {w}"),
        SsoError::TooLarge => "JWKS larger than 64 KiB".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::EncodingKey;
    use serde_json::json;
    use std::cell::Cell;

    const NOW: u64 = 1_700_000_000;

    // Test-only keys generated with openssl for these tests; they protect nothing.
    const RSA_PRIVATE: &str = include_str!("../../../tests/data/jwt/rsa-private.pem");
    const RSA_PUBLIC: &str = include_str!("../../../tests/data/jwt/rsa-public.pem");
    const RSA_PUBLIC_PKCS1: &str = "-----BEGIN RSA PUBLIC KEY-----
MIIBCgKCAQEAjvsVe4HwlRv1fe8FKKyeWMlrTiAHvtKXt9URJUUOOXYnE0sMiizD
1YpcBDTHSudaFsppT3O/HMBURPCQv97yuRbRaDhy24LzL2tHRMI8JFMP/szP7Dbq
ZRQOsRfjkpAbL2fq6oQXIUg0xg7nqjU75SPxFvgP7/UuZuZ5Q3zaBtq1vSFGEF1n
HmRforHiySHnMO4nS0QK2Q+LrtVba4bDw93jw/3UO+D3jOmwWkvItVPaB2NgHEKA
YU0Uy4cThziNraIlG/lLWwac5DP4u8Twd2pwk5CsQMr1KcyiG5eoH3G+Jl3KSvSF
3XySvtFhc7Cpf1c7V/qF0GPKRTnvZDBzkQIDAQAB
-----END RSA PUBLIC KEY-----
";
    const EC1_PRIVATE: &str = include_str!("../../../tests/data/jwt/ec-private.pem");
    const EC1_PUBLIC: &str = include_str!("../../../tests/data/jwt/ec-public.pem");
    const EC2_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg+YTJWrcAE4SnquP+
TAiAHcLLLazz+xPtSrRBywjSLWWhRANCAATFIoxjitNNv7fBLy/LnR7q41Z9c1lm
B8Bkfa8/uzv8UnrxzhcMxn/lctHoPivKD3biWhz2AYi2Kj1byjsgHaw+
-----END PRIVATE KEY-----
";
    const EC2_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAExSKMY4rTTb+3wS8vy50e6uNWfXNZ
ZgfAZH2vP7s7/FJ68c4XDMZ/5XLR6D4ryg924loc9gGItio9W8o7IB2sPg==
-----END PUBLIC KEY-----
";
    const ED_PRIVATE: &str = include_str!("../../../tests/data/jwt/ed-private.pem");
    const ED_PUBLIC: &str = include_str!("../../../tests/data/jwt/ed-public.pem");
    const P384_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIG2AgEAMBAGByqGSM49AgEGBSuBBAAiBIGeMIGbAgEBBDCtGN8g0DCckU56ETC6
4NpctS0gmyG2I2QqNTKcMTjOYMiJhPD8hRgp6z5yCUmFqwWhZANiAAQRxy69nCxb
lrjYxwQYDK1mNqbQdsUise/azsbcDrgjh+3p9ORgStKVUSaP/dkUuq+xF3uMy2Zx
YR5jtY9G9Wb7CwMNU+RpDMFbgPgou0B/dCBJ4OJfm3PFOp6MLFIGRfg=
-----END PRIVATE KEY-----
";
    const P384_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAEEccuvZwsW5a42McEGAytZjam0HbFIrHv
2s7G3A64I4ft6fTkYErSlVEmj/3ZFLqvsRd7jMtmcWEeY7WPRvVm+wsDDVPkaQzB
W4D4KLtAf3QgSeDiX5tzxTqejCxSBkX4
-----END PUBLIC KEY-----
";
    const RSA1024_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQC2bqtEqU4/rizeajsZgwpbXyVK
HoPEsd80Ii8MzQ7utvzK7W77LjGbEtoPjwsBJ7O7UbYAKvsr1//zem7xvKZFSF/E
VAlieGfq9zLIWvdT60bYiLs8vJ+vG2QDjuPwBkfwU/vlTyTE5/uTQ7VGlvr3DNaT
8SjarKBnMdZPeNkHsQIDAQAB
-----END PUBLIC KEY-----
";
    const ED448_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MEMwBQYDK2VxAzoAgVoxBGiUGloh3frYc7ynQRQ0unw7yy657OmGE18K6OoPS6oF
IwQ5hvJMuta+T7ghQrPwmNIB988A
-----END PUBLIC KEY-----
";

    fn der(pem: &str) -> Vec<u8> {
        pem_blocks(pem).unwrap().remove(0).1
    }

    fn b64(v: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(v)
    }

    /// A JWK for a PEM public key, built through this module's own SPKI reader.
    fn jwk(pem: &str, kid: Option<&str>, alg: Option<&str>) -> Value {
        let mut v = match spki_public_key(&der(pem)).unwrap() {
            PublicKeyData::Rsa { n, e } => json!({"kty": "RSA", "n": b64(&n), "e": b64(&e)}),
            PublicKeyData::Ec { curve, point } => {
                let (crv, len) = match curve {
                    Curve::P256 => ("P-256", 32),
                    Curve::P384 => ("P-384", 48),
                    Curve::Ed25519 => unreachable!(),
                };
                json!({"kty": "EC", "crv": crv, "x": b64(&point[1..1 + len]),
                       "y": b64(&point[1 + len..])})
            }
            PublicKeyData::Ed25519(x) => json!({"kty": "OKP", "crv": "Ed25519", "x": b64(&x)}),
        };
        if let Some(kid) = kid {
            v["kid"] = json!(kid);
        }
        if let Some(alg) = alg {
            v["alg"] = json!(alg);
        }
        v
    }

    fn rsa_key() -> EncodingKey {
        EncodingKey::from_rsa_der(&der(RSA_PRIVATE))
    }
    fn ec1_key() -> EncodingKey {
        EncodingKey::from_ec_der(&der(EC1_PRIVATE))
    }
    fn ec2_key() -> EncodingKey {
        EncodingKey::from_ec_der(&der(EC2_PRIVATE))
    }
    fn ed_key() -> EncodingKey {
        EncodingKey::from_ed_der(&der(ED_PRIVATE))
    }
    fn p384_key() -> EncodingKey {
        EncodingKey::from_ec_der(&der(P384_PRIVATE))
    }

    /// A compact JWS with exactly this header and payload.
    fn sign(header: &Value, claims: &Value, key: &EncodingKey, alg: Algorithm) -> String {
        let msg = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let sig = jsonwebtoken::crypto::sign(msg.as_bytes(), key, alg).unwrap();
        format!("{msg}.{sig}")
    }

    fn claims() -> Value {
        json!({
            "iss": "https://sso.example.com/realms/sip",
            "aud": "sip-proxy",
            "sub": "2f6c-uuid",
            "preferred_username": "alice",
            "exp": NOW + 300,
            "iat": NOW - 10,
            "scope": "openid sip",
            "groups": ["staff"],
        })
    }

    fn jwks_doc() -> Value {
        json!({"keys": [
            jwk(RSA_PUBLIC, Some("rsa1"), Some("RS256")),
            jwk(EC1_PUBLIC, Some("ec1"), None),
            jwk(ED_PUBLIC, Some("ed1"), Some("EdDSA")),
            jwk(P384_PUBLIC, Some("p384"), None),
            jwk(RSA_PUBLIC, Some("rsa-pss"), Some("PS256")),
        ]})
    }

    fn keys() -> KeySet {
        KeySet::from_jwks_json(jwks_doc().to_string().as_bytes()).unwrap()
    }

    fn policy() -> JwtPolicy {
        JwtPolicy {
            algorithms: parse_algorithms(DEFAULT_ALGORITHMS).unwrap(),
            issuer: Some("https://sso.example.com/realms/sip".into()),
            audience: Some("sip-proxy".into()),
            leeway: 30,
        }
    }

    fn rs256(kid: &str, claims: &Value) -> String {
        sign(
            &json!({"alg": "RS256", "typ": "JWT", "kid": kid}),
            claims,
            &rsa_key(),
            Algorithm::RS256,
        )
    }

    fn es256(kid: Option<&str>, claims: &Value, key: &EncodingKey) -> String {
        let mut h = json!({"alg": "ES256", "typ": "at+jwt"});
        if let Some(kid) = kid {
            h["kid"] = json!(kid);
        }
        sign(&h, claims, key, Algorithm::ES256)
    }

    fn check(token: &str) -> Result<Introspection, JwtError> {
        validate(token, &keys(), &policy(), NOW)
    }

    fn reason(r: Result<Introspection, JwtError>) -> String {
        match r {
            Err(JwtError::Invalid(why)) => why,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    fn with(mut c: Value, key: &str, v: Value) -> Value {
        c[key] = v;
        c
    }

    fn without(mut c: Value, key: &str) -> Value {
        c.as_object_mut().unwrap().remove(key);
        c
    }

    // ---- algorithms ----

    #[test]
    fn multibyte_alg_names_do_not_panic() {
        // Found by the fuzzer: an alg whose second byte is inside a UTF-8 character.
        let header = URL_SAFE_NO_PAD.encode("{\"alg\":\"n\u{679}y\"}");
        let token = format!("{header}.eyI0.");
        let keys = KeySet::from_file_contents(ED_PUBLIC.as_bytes()).unwrap();
        assert!(matches!(
            validate(&token, &keys, &JwtPolicy::default(), 0),
            Err(JwtError::Invalid(_)) | Err(JwtError::NotAJwt)
        ));
        assert!(parse_algorithms("\u{679}").is_err());
    }

    #[test]
    fn algorithm_lists() {
        use JwsAlg::*;
        assert_eq!(
            parse_algorithms(DEFAULT_ALGORITHMS).unwrap(),
            vec![RS256, ES256, EdDSA]
        );
        assert_eq!(
            parse_algorithms("RS256,RS384,RS512,PS256,PS384,PS512,ES256,ES384,EdDSA").unwrap(),
            ALL_ALGS.to_vec()
        );
        assert_eq!(
            parse_algorithms(" ES256 , ES256,RS256").unwrap(),
            vec![ES256, RS256]
        );
        for bad in ["none", "None", "RS256,NONE"] {
            assert!(
                parse_algorithms(bad).unwrap_err().contains("never"),
                "{bad}"
            );
        }
        for bad in ["HS256", "RS256,HS384", "hs512"] {
            assert!(parse_algorithms(bad).unwrap_err().contains("HMAC"), "{bad}");
        }
        assert!(parse_algorithms("rs256")
            .unwrap_err()
            .contains("case-sensitive"));
        assert!(parse_algorithms("ES512").unwrap_err().contains("unknown"));
        assert!(parse_algorithms("").is_err());
        assert!(parse_algorithms("RS256,,ES256").is_err());
        assert_eq!(JwtPolicy::default().algorithms, vec![RS256, ES256, EdDSA]);
        for a in ALL_ALGS {
            assert_eq!(JwsAlg::from_name(a.name()), Some(a));
            assert_eq!(a.to_string(), a.name());
        }
    }

    // ---- valid tokens ----

    #[test]
    fn valid_rs256_es256_eddsa() {
        let ed = sign(
            &json!({"alg": "EdDSA", "kid": "ed1", "typ": "application/at+jwt"}),
            &claims(),
            &ed_key(),
            Algorithm::EdDSA,
        );
        for token in [
            rs256("rsa1", &claims()),
            es256(Some("ec1"), &claims(), &ec1_key()),
            ed,
        ] {
            assert!(looks_like_jwt(&token));
            let i = check(&token).unwrap();
            assert!(i.active);
            assert_eq!(i.user.as_deref(), Some("alice"));
            assert_eq!(i.exp, Some((NOW + 300) as i64));
            assert_eq!(i.scope.as_deref(), Some("openid sip"));
            assert_eq!(i.claims.get("groups"), Some(&json!(["staff"])));
            assert_eq!(i.claims.map().len(), claims().as_object().unwrap().len());
        }
    }

    #[test]
    fn es384_and_ps256_when_allowed() {
        let mut p = policy();
        p.algorithms = parse_algorithms("ES384,PS256").unwrap();
        let es384 = sign(
            &json!({"alg": "ES384", "kid": "p384"}),
            &claims(),
            &p384_key(),
            Algorithm::ES384,
        );
        assert!(validate(&es384, &keys(), &p, NOW).is_ok());
        let ps256 = sign(
            &json!({"alg": "PS256", "kid": "rsa-pss"}),
            &claims(),
            &rsa_key(),
            Algorithm::PS256,
        );
        assert!(validate(&ps256, &keys(), &p, NOW).is_ok());
        // not allowed by default
        assert!(reason(check(&es384)).contains("not in jwt_algorithms"));
        assert!(reason(check(&ps256)).contains("not in jwt_algorithms"));
    }

    // ---- algorithm attacks ----

    #[test]
    fn alg_none_is_refused() {
        let c = b64(claims().to_string().as_bytes());
        for alg in ["none", "None", "NONE"] {
            let h = b64(json!({"alg": alg, "kid": "rsa1"}).to_string().as_bytes());
            for token in [format!("{h}.{c}."), format!("{h}.{c}.c2ln")] {
                assert!(looks_like_jwt(&token));
                assert!(reason(check(&token)).contains("none"), "{token}");
            }
        }
    }

    #[test]
    fn hmac_signed_with_the_public_key_is_refused() {
        // The classic confusion: the attacker uses the RSA public key as an HMAC secret.
        let mut all = policy();
        all.algorithms = ALL_ALGS.to_vec();
        for secret in [
            RSA_PUBLIC.as_bytes().to_vec(),
            der(RSA_PUBLIC),
            der(RSA_PUBLIC_PKCS1),
        ] {
            for (alg, name) in [
                (Algorithm::HS256, "HS256"),
                (Algorithm::HS384, "HS384"),
                (Algorithm::HS512, "HS512"),
            ] {
                for kid in [json!("rsa1"), Value::Null] {
                    let mut h = json!({"alg": name, "typ": "JWT"});
                    if !kid.is_null() {
                        h["kid"] = kid.clone();
                    }
                    let token = sign(&h, &claims(), &EncodingKey::from_secret(&secret), alg);
                    let why = reason(validate(&token, &keys(), &all, NOW));
                    assert!(why.contains("HMAC"), "{why}");
                }
            }
        }
    }

    #[test]
    fn alg_outside_the_allow_list() {
        let mut p = policy();
        p.algorithms = vec![JwsAlg::RS256];
        let token = es256(Some("ec1"), &claims(), &ec1_key());
        assert!(reason(validate(&token, &keys(), &p, NOW)).contains("ES256 not in"));
        p.algorithms.clear();
        assert!(validate(&rs256("rsa1", &claims()), &keys(), &p, NOW).is_err());
        let odd = sign(
            &json!({"alg": "ES256K"}),
            &claims(),
            &ec1_key(),
            Algorithm::ES256,
        );
        assert!(reason(check(&odd)).contains("unsupported alg"));
    }

    #[test]
    fn key_must_fit_the_alg() {
        // EC key named by an RS256 token, RSA key named by an ES256 token
        let token = sign(
            &json!({"alg": "RS256", "kid": "ec1"}),
            &claims(),
            &rsa_key(),
            Algorithm::RS256,
        );
        assert!(reason(check(&token)).contains("does not fit"));
        let token = es256(Some("rsa1"), &claims(), &ec1_key());
        assert!(reason(check(&token)).contains("does not fit"));
        // ES256 on the P-384 key
        let token = es256(Some("p384"), &claims(), &ec1_key());
        assert!(reason(check(&token)).contains("does not fit"));
        // the JWK says RS256 only; a PS256 token naming it is refused
        let mut p = policy();
        p.algorithms = ALL_ALGS.to_vec();
        let token = sign(
            &json!({"alg": "PS256", "kid": "rsa1"}),
            &claims(),
            &rsa_key(),
            Algorithm::PS256,
        );
        assert!(reason(validate(&token, &keys(), &p, NOW)).contains("does not fit"));
        // and a JWK whose alg contradicts its own type is not loaded at all
        let doc = json!({"keys": [jwk(EC1_PUBLIC, Some("x"), Some("RS256")),
                                  jwk(EC1_PUBLIC, Some("y"), Some("ES384")),
                                  jwk(ED_PUBLIC, Some("ok"), None)]});
        let set = KeySet::from_jwks_json(doc.to_string().as_bytes()).unwrap();
        assert_eq!((set.len(), set.skipped()), (1, 2));
    }

    // ---- key choice ----

    #[test]
    fn unknown_kid_asks_for_a_refresh() {
        let token = rs256("rotated-2", &claims());
        assert_eq!(
            check(&token),
            Err(JwtError::UnknownKey {
                kid: Some("rotated-2".into())
            })
        );
        // no kid, and no key of the token's type at all
        let only_rsa = KeySet::from_jwks_json(
            json!({"keys": [jwk(RSA_PUBLIC, Some("rsa1"), None)]})
                .to_string()
                .as_bytes(),
        )
        .unwrap();
        let token = es256(None, &claims(), &ec1_key());
        assert_eq!(
            validate(&token, &only_rsa, &policy(), NOW),
            Err(JwtError::UnknownKey { kid: None })
        );
    }

    #[test]
    fn without_kid_every_fitting_key_is_tried() {
        let doc = json!({"keys": [jwk(EC1_PUBLIC, None, None), jwk(EC2_PUBLIC, None, None),
                                  jwk(RSA_PUBLIC, Some("r"), None)]});
        let set = KeySet::from_jwks_json(doc.to_string().as_bytes()).unwrap();
        for key in [ec1_key(), ec2_key()] {
            let token = es256(None, &claims(), &key);
            assert!(validate(&token, &set, &policy(), NOW).is_ok());
        }
        // and a kid unknown to the set is matched against kid-less keys (a PEM key file)
        let token = es256(Some("whatever"), &claims(), &ec2_key());
        assert!(validate(&token, &set, &policy(), NOW).is_ok());
        // signed by a key not in the set
        let doc = json!({"keys": [jwk(EC1_PUBLIC, None, None)]});
        let set = KeySet::from_jwks_json(doc.to_string().as_bytes()).unwrap();
        let token = es256(None, &claims(), &ec2_key());
        assert!(reason(validate(&token, &set, &policy(), NOW)).contains("bad signature"));
        let token = es256(Some("k9"), &claims(), &ec2_key());
        assert_eq!(
            validate(&token, &set, &policy(), NOW),
            Err(JwtError::UnknownKey {
                kid: Some("k9".into())
            })
        );
    }

    #[test]
    fn forged_or_tampered_tokens() {
        // right kid, wrong key
        let token = es256(Some("ec1"), &claims(), &ec2_key());
        assert!(reason(check(&token)).contains("bad signature"));
        // payload swapped after signing
        let good = rs256("rsa1", &claims());
        let evil = b64(with(claims(), "preferred_username", json!("bob"))
            .to_string()
            .as_bytes());
        let parts: Vec<&str> = good.split('.').collect();
        let forged = format!("{}.{evil}.{}", parts[0], parts[2]);
        assert!(reason(check(&forged)).contains("bad signature"));
        // signature removed or cut
        assert!(reason(check(&format!("{}.{}.", parts[0], parts[1]))).contains("signature"));
        let cut = &good[..good.len() - 4];
        assert!(reason(check(cut)).contains("signature"));
        // header changed (kid) after signing
        let h = b64(json!({"alg": "RS256", "typ": "JWT", "kid": "rsa1", "x": 1})
            .to_string()
            .as_bytes());
        assert!(reason(check(&format!("{h}.{}.{}", parts[1], parts[2]))).contains("bad signature"));
    }

    #[test]
    fn every_single_byte_change_is_refused() {
        let good = es256(Some("ec1"), &claims(), &ec1_key());
        let alphabet = b"AZaz09-_.=+/ ";
        for i in 0..good.len() {
            for &c in alphabet {
                let mut b = good.clone().into_bytes();
                if b[i] == c {
                    continue;
                }
                b[i] = c;
                let t = String::from_utf8(b).unwrap();
                assert!(check(&t).is_err(), "accepted a change at {i}");
            }
        }
    }

    #[test]
    fn header_rules() {
        let sign_h = |h: Value| sign(&h, &claims(), &rsa_key(), Algorithm::RS256);
        for typ in ["JWT", "jwt", "at+jwt", "AT+JWT", "application/at+jwt"] {
            assert!(check(&sign_h(json!({"alg": "RS256", "kid": "rsa1", "typ": typ}))).is_ok());
        }
        assert!(check(&sign_h(json!({"alg": "RS256", "kid": "rsa1"}))).is_ok());
        for typ in [json!("JWE"), json!("id_token+jwt"), json!(1), json!(null)] {
            assert!(reason(check(&sign_h(
                json!({"alg": "RS256", "kid": "rsa1", "typ": typ})
            )))
            .contains("typ"));
        }
        let crit = sign_h(json!({"alg": "RS256", "kid": "rsa1", "crit": ["exp"], "exp": 1}));
        assert!(reason(check(&crit)).contains("critical"));
        let b64_false =
            sign_h(json!({"alg": "RS256", "kid": "rsa1", "b64": false, "crit": ["b64"]}));
        assert!(check(&b64_false).is_err());
        assert!(reason(check(&sign_h(json!({"alg": "RS256", "kid": 7})))).contains("kid"));
        // a key carried in the token itself is ignored: the kid still has to be known
        let embedded = sign(
            &json!({"alg": "ES256", "kid": "mine", "jwk": jwk(EC2_PUBLIC, None, None),
                    "jku": "https://evil.example/jwks"}),
            &claims(),
            &ec2_key(),
            Algorithm::ES256,
        );
        assert_eq!(
            check(&embedded),
            Err(JwtError::UnknownKey {
                kid: Some("mine".into())
            })
        );
    }

    // ---- claims ----

    #[test]
    fn expiry_with_leeway() {
        let t = |exp: i64| rs256("rsa1", &with(claims(), "exp", json!(exp)));
        let now = NOW as i64;
        assert!(check(&t(now - 29)).is_ok(), "inside the leeway");
        assert_eq!(reason(check(&t(now - 30))), "expired");
        assert_eq!(reason(check(&t(now - 100_000))), "expired");
        assert_eq!(reason(check(&t(-5))), "expired");
        let mut strict = policy();
        strict.leeway = 0;
        assert!(reason(validate(&t(now), &keys(), &strict, NOW)).contains("expired"));
        assert!(validate(&t(now + 1), &keys(), &strict, NOW).is_ok());
        // fractional and huge NumericDates
        assert!(check(&rs256(
            "rsa1",
            &with(claims(), "exp", json!((NOW + 60) as f64 + 0.5))
        ))
        .is_ok());
        let far = check(&rs256("rsa1", &with(claims(), "exp", json!(u64::MAX)))).unwrap();
        assert_eq!(far.exp, Some(i64::MAX));
        assert!(check(&rs256("rsa1", &with(claims(), "exp", json!(1e300)))).is_ok());
        assert!(check(&rs256("rsa1", &with(claims(), "exp", json!(-1e300)))).is_err());
        // an enormous leeway does not overflow
        let mut lax = policy();
        lax.leeway = u64::MAX;
        assert!(validate(&t(now - 100), &keys(), &lax, NOW).is_ok());
        assert!(validate(&t(now), &keys(), &policy(), u64::MAX).is_err());
    }

    #[test]
    fn exp_is_required_and_numeric() {
        assert_eq!(
            reason(check(&rs256("rsa1", &without(claims(), "exp")))),
            "no exp"
        );
        for bad in [json!("1700000300"), json!(null), json!([1]), json!(true)] {
            assert!(reason(check(&rs256("rsa1", &with(claims(), "exp", bad)))).contains("exp"));
        }
    }

    #[test]
    fn nbf_and_iat_in_the_future() {
        let now = NOW as i64;
        assert!(check(&rs256("rsa1", &with(claims(), "nbf", json!(now + 30)))).is_ok());
        assert!(reason(check(&rs256(
            "rsa1",
            &with(claims(), "nbf", json!(now + 31))
        )))
        .contains("nbf"));
        assert!(
            reason(check(&rs256("rsa1", &with(claims(), "nbf", json!("soon"))))).contains("nbf")
        );
        assert!(check(&rs256("rsa1", &with(claims(), "iat", json!(now + 30)))).is_ok());
        assert!(reason(check(&rs256(
            "rsa1",
            &with(claims(), "iat", json!(now + 31))
        )))
        .contains("iat"));
        assert!(check(&rs256("rsa1", &without(claims(), "iat"))).is_ok());
    }

    #[test]
    fn issuer() {
        let t = |iss: Value| rs256("rsa1", &with(claims(), "iss", iss));
        assert!(reason(check(&t(json!("https://evil.example")))).contains("issuer"));
        assert!(reason(check(&t(json!("https://sso.example.com/realms/sip/")))).contains("issuer"));
        assert!(
            reason(check(&t(json!(["https://sso.example.com/realms/sip"])))).contains("issuer")
        );
        assert_eq!(
            reason(check(&rs256("rsa1", &without(claims(), "iss")))),
            "no iss"
        );
        let mut any = policy();
        any.issuer = None;
        assert!(validate(&t(json!("https://evil.example")), &keys(), &any, NOW).is_ok());
    }

    #[test]
    fn audience_string_or_array() {
        let t = |aud: Value| rs256("rsa1", &with(claims(), "aud", aud));
        assert!(check(&t(json!("sip-proxy"))).is_ok());
        assert!(check(&t(json!(["account", "sip-proxy"]))).is_ok());
        for bad in [
            json!("account"),
            json!(["account"]),
            json!([]),
            json!(7),
            json!("SIP-PROXY"),
        ] {
            assert!(reason(check(&t(bad))).contains("audience"));
        }
        assert_eq!(
            reason(check(&rs256("rsa1", &without(claims(), "aud")))),
            "no aud"
        );
        let mut any = policy();
        any.audience = None;
        assert!(validate(&t(json!("account")), &keys(), &any, NOW).is_ok());
        assert!(validate(
            &rs256("rsa1", &without(claims(), "aud")),
            &keys(),
            &any,
            NOW
        )
        .is_ok());
    }

    #[test]
    fn user_claim_precedence() {
        let user = |c: Value| check(&rs256("rsa1", &c)).unwrap().user;
        let c = with(claims(), "username", json!("al"));
        assert_eq!(user(c.clone()).as_deref(), Some("al"));
        assert_eq!(
            user(with(c, "username", json!(""))).as_deref(),
            Some("alice")
        );
        assert_eq!(
            user(with(claims(), "preferred_username", json!(5))).as_deref(),
            Some("2f6c-uuid")
        );
        let bare = without(without(claims(), "preferred_username"), "sub");
        assert_eq!(user(bare.clone()), None);
        assert_eq!(user(with(bare, "sub", json!("s"))).as_deref(), Some("s"));
    }

    #[test]
    fn scope_from_scope_or_scp() {
        let scope = |c: Value| check(&rs256("rsa1", &c)).unwrap().scope;
        let no_scope = without(claims(), "scope");
        assert_eq!(scope(no_scope.clone()), None);
        assert_eq!(
            scope(with(no_scope.clone(), "scp", json!(["sip", "presence"]))).as_deref(),
            Some("sip presence")
        );
        assert_eq!(
            scope(with(no_scope, "scp", json!("sip"))).as_deref(),
            Some("sip")
        );
        assert_eq!(
            scope(with(claims(), "scp", json!(["x"]))).as_deref(),
            Some("openid sip")
        );
    }

    #[test]
    fn payload_must_be_a_json_object() {
        let h = json!({"alg": "ES256", "kid": "ec1"});
        for body in ["[1]", "\"x\"", "not json", ""] {
            let msg = format!("{}.{}", b64(h.to_string().as_bytes()), b64(body.as_bytes()));
            let sig =
                jsonwebtoken::crypto::sign(msg.as_bytes(), &ec1_key(), Algorithm::ES256).unwrap();
            let token = format!("{msg}.{sig}");
            if body.is_empty() {
                assert_eq!(check(&token), Err(JwtError::NotAJwt));
            } else {
                assert!(reason(check(&token)).contains("payload"), "{body}");
            }
        }
    }

    // ---- what is not a JWT ----

    #[test]
    fn not_a_jwt() {
        let hdr = b64(br#"{"alg":"RS256"}"#);
        let cases = [
            "".to_string(),
            "opaque-token-0123456789".to_string(),
            "a.b".to_string(),
            format!("{hdr}.e30"),
            format!("{hdr}.e30.c2ln.extra"),
            format!("{hdr}.e30.c2ln.a.b"),
            ".e30.c2ln".to_string(),
            format!("{hdr}..c2ln"),
            "!!!.e30.c2ln".to_string(),
            format!("{hdr}=.e30.c2ln"),
            format!("{hdr}.e3+.c2ln"),
            format!("{}.e30.c2ln", b64(b"not json")),
            format!("{}.e30.c2ln", b64(b"[1,2]")),
            format!("{}.e30.c2ln", b64(br#"{"typ":"JWT"}"#)),
            format!("{}.e30.c2ln", b64(br#"{"alg":5}"#)),
            format!("{}.e30.c2ln", b64(br#"{"alg":null}"#)),
            "eyJ.e30.c2ln".to_string(),
            "A".repeat(100_000),
            format!("{hdr}.{}.c2ln", "A".repeat(3)),
        ];
        for (i, token) in cases.iter().enumerate() {
            // "AAA" is not valid base64url of anything, but that is the payload's problem:
            // the shape is a JWT, and it is refused as one
            if i + 1 == cases.len() {
                assert!(looks_like_jwt(token));
                reason(check(token));
                continue;
            }
            assert!(!looks_like_jwt(token), "{token}");
            assert_eq!(check(token), Err(JwtError::NotAJwt), "{token}");
        }
    }

    #[test]
    fn oversized_and_hostile_inputs_never_panic() {
        // a real-looking token over the limit
        let big = with(claims(), "pad", json!("x".repeat(MAX_JWT_LEN)));
        let token = rs256("rsa1", &big);
        assert!(looks_like_jwt(&token));
        assert!(reason(check(&token)).contains("longer"));
        // deep nesting in the header
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let h = b64(format!(r#"{{"alg":"RS256","x":{deep}}}"#).as_bytes());
        assert_eq!(check(&format!("{h}.e30.c2ln")), Err(JwtError::NotAJwt));
        // a long, hostile kid ends up escaped and bounded in the log text
        let kid = format!("\u{1b}[31m\r\n{}", "k".repeat(5000));
        let e = check(&rs256(&kid, &claims())).unwrap_err();
        let text = e.to_string();
        assert!(
            text.len() < 120 && !text.contains('\r') && !text.contains('\u{1b}'),
            "{text}"
        );
        // pseudo-random bytes
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let good = rs256("rsa1", &claims());
        for round in 0..3000 {
            let len = (next() % 300) as usize;
            let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let text = String::from_utf8_lossy(&bytes);
            let _ = looks_like_jwt(&text);
            let _ = check(&text);
            let _ = KeySet::from_jwks_json(&bytes);
            let _ = KeySet::from_file_contents(&bytes);
            let _ = spki_public_key(&bytes);
            // splice random base64url characters into a valid token
            let mut t = good.clone().into_bytes();
            for _ in 0..(round % 4 + 1) {
                let pos = (next() as usize) % t.len();
                t[pos] = b"ABCxyz019-_."[(next() % 12) as usize];
            }
            let t = String::from_utf8(t).unwrap();
            if t != good {
                assert!(check(&t).is_err());
            }
        }
        // every prefix of a valid key and a valid token
        for pem in [RSA_PUBLIC, EC1_PUBLIC, ED_PUBLIC, RSA_PUBLIC_PKCS1] {
            let d = der(pem);
            for n in 0..d.len() {
                assert!(spki_public_key(&d[..n]).is_err());
                assert!(rsa_public_key(&d[..n]).is_err());
            }
        }
        for n in 0..good.len() {
            assert!(check(&good[..n]).is_err());
        }
    }

    #[test]
    fn errors_display_without_the_token() {
        let token = rs256("nope", &claims());
        for e in [
            check(&token).unwrap_err(),
            check(&rs256("rsa1", &with(claims(), "exp", json!(1)))).unwrap_err(),
            JwtError::NotAJwt,
            JwtError::UnknownKey { kid: None },
            JwtError::NoKeys("x".into()),
        ] {
            let text = e.to_string();
            assert!(!text.contains(&token[..20]), "{text}");
            assert!(!text.is_empty());
        }
        assert_eq!(
            JwtError::UnknownKey {
                kid: Some("k1".into())
            }
            .to_string(),
            "no key with kid \"k1\""
        );
    }

    // ---- JWK Sets ----

    #[test]
    fn jwks_skips_what_it_must_not_use() {
        let doc = json!({"keys": [
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0", "alg": "HS256"},
            with(jwk(RSA_PUBLIC, Some("enc"), None), "use", json!("enc")),
            with(jwk(RSA_PUBLIC, Some("ops"), None), "key_ops", json!(["encrypt"])),
            with(jwk(RSA_PUBLIC, Some("hs"), None), "alg", json!("HS256")),
            with(jwk(RSA_PUBLIC, Some("oaep"), None), "alg", json!("RSA-OAEP")),
            jwk(RSA1024_PUBLIC, Some("small"), None),
            {"kty": "OKP", "crv": "Ed448", "kid": "ed448", "x": "AAAA"},
            {"kty": "OKP", "crv": "X25519", "kid": "x25519", "x": "AAAA"},
            {"kty": "EC", "crv": "secp256k1", "kid": "k1", "x": "AA", "y": "AA"},
            {"kty": "EC", "crv": "P-256", "kid": "short", "x": "AAAA", "y": "AAAA"},
            {"kty": "RSA", "kid": "no-n", "e": "AQAB"},
            {"kty": "RSA", "kid": "bad-b64", "n": "!!", "e": "AQAB"},
            {"kty": "XYZ", "kid": "odd"},
            {"kid": "no-kty"},
            {"kty": "RSA", "kid": 5},
            "not an object",
            with(jwk(ED_PUBLIC, Some("ed-ok"), None), "use", json!("sig")),
            with(jwk(EC1_PUBLIC, Some("ec-ok"), None), "key_ops", json!(["verify"])),
        ]});
        let set = KeySet::from_jwks_json(doc.to_string().as_bytes()).unwrap();
        assert_eq!(set.len(), 2);
        assert_eq!(set.skipped(), 16);
        assert_eq!(
            set.keys()
                .iter()
                .map(|k| k.kid().unwrap())
                .collect::<Vec<_>>(),
            ["ed-ok", "ec-ok"]
        );
        assert_eq!(set.keys()[0].family(), KeyFamily::Okp);
        let summary = set.summary();
        assert!(
            summary.contains("16 skipped") && summary.contains("symmetric"),
            "{summary}"
        );
        assert!(summary.contains("and 8 more"), "{summary}");
        // padded base64url members are tolerated
        let mut padded = jwk(EC1_PUBLIC, Some("p"), None);
        let x = padded["x"].as_str().unwrap().to_string() + "=";
        padded["x"] = json!(x);
        let set = KeySet::from_jwks_json(json!({"keys": [padded]}).to_string().as_bytes()).unwrap();
        assert!(validate(
            &es256(Some("p"), &claims(), &ec1_key()),
            &set,
            &policy(),
            NOW
        )
        .is_ok());
    }

    #[test]
    fn jwks_with_nothing_usable_is_an_error() {
        let only_hmac = json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]});
        let e = KeySet::from_jwks_json(only_hmac.to_string().as_bytes()).unwrap_err();
        assert!(
            e.contains("no usable key") && e.contains("symmetric"),
            "{e}"
        );
        assert!(KeySet::from_jwks_json(br#"{"keys":[]}"#).is_err());
        assert!(KeySet::from_jwks_json(br#"{"keys":{}}"#)
            .unwrap_err()
            .contains("keys"));
        assert!(KeySet::from_jwks_json(br#"[]"#).is_err());
        assert!(KeySet::from_jwks_json(b"<html>")
            .unwrap_err()
            .contains("JSON"));
        assert!(KeySet::from_jwks_json(b"").is_err());
    }

    // ---- key files ----

    #[test]
    fn key_file_pem_public_keys() {
        let cases: [(&str, String); 4] = [
            (RSA_PUBLIC, rs256("any-kid", &claims())),
            (RSA_PUBLIC_PKCS1, rs256("rsa1", &claims())),
            (EC1_PUBLIC, es256(None, &claims(), &ec1_key())),
            (
                ED_PUBLIC,
                sign(
                    &json!({"alg": "EdDSA"}),
                    &claims(),
                    &ed_key(),
                    Algorithm::EdDSA,
                ),
            ),
        ];
        for (pem, token) in &cases {
            let set = KeySet::from_file_contents(pem.as_bytes()).unwrap();
            assert_eq!(set.len(), 1);
            assert!(set.keys()[0].kid().is_none());
            assert!(validate(token, &set, &policy(), NOW).is_ok(), "{pem}");
        }
        // several blocks, CRLF line ends and text around them
        let both = format!(
            "comment\r\n{}\r\n{}trailer\n",
            RSA_PUBLIC.replace('\n', "\r\n"),
            EC1_PUBLIC
        );
        let set = KeySet::from_file_contents(both.as_bytes()).unwrap();
        assert_eq!(set.len(), 2);
        for (_, token) in &cases[..3] {
            assert!(validate(token, &set, &policy(), NOW).is_ok());
        }
        // a token signed with another key
        let set = KeySet::from_file_contents(EC1_PUBLIC.as_bytes()).unwrap();
        let token = es256(None, &claims(), &ec2_key());
        assert!(reason(validate(&token, &set, &policy(), NOW)).contains("bad signature"));
    }

    #[test]
    fn key_file_json() {
        let set = KeySet::from_file_contents(jwks_doc().to_string().as_bytes()).unwrap();
        assert_eq!(set.len(), 5);
        let one = jwk(ED_PUBLIC, Some("ed1"), None).to_string();
        let set = KeySet::from_file_contents(format!("\n  {one}\n").as_bytes()).unwrap();
        assert_eq!(set.keys()[0].kid(), Some("ed1"));
        let bad = json!({"kty": "oct", "k": "c2VjcmV0"}).to_string();
        assert!(KeySet::from_file_contents(bad.as_bytes())
            .unwrap_err()
            .contains("symmetric"));
        assert!(KeySet::from_file_contents(b"{not json").is_err());
    }

    #[test]
    fn key_file_refusals() {
        let err = |data: &str| KeySet::from_file_contents(data.as_bytes()).unwrap_err();
        for private in [RSA_PRIVATE, EC1_PRIVATE, ED_PRIVATE] {
            assert!(err(private).contains("private key"), "{private}");
        }
        // a private key after a public one is still refused
        assert!(err(&format!("{RSA_PUBLIC}{EC1_PRIVATE}")).contains("private key"));
        assert!(
            err("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
                .contains("certificate")
        );
        assert!(err(RSA1024_PUBLIC).contains("1024 bits"));
        assert!(err(ED448_PUBLIC).contains("unsupported public key type"));
        assert!(err("-----BEGIN PUBLIC KEY-----\nAAAA\n").contains("END"));
        assert!(
            err("-----BEGIN PUBLIC KEY-----\n!!!!\n-----END PUBLIC KEY-----\n").contains("base64")
        );
        assert!(
            err("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n").contains("DER")
        );
        assert!(err("-----BEGIN RSA PUBLIC KEY-----\nProc-Type: 4,ENCRYPTED\nAAAA\n-----END RSA PUBLIC KEY-----\n")
            .contains("encrypted"));
        assert!(err("-----BEGIN FOO-----\nAAAA\n-----END FOO-----\n").contains("unsupported"));
        assert!(err("just some text").contains("neither"));
        assert!(err("").contains("neither"));
        assert!(KeySet::from_file_contents(&[0xff, 0xfe, 0x00])
            .unwrap_err()
            .contains("not text"));
        assert!(KeySet::from_file_contents(&vec![b' '; MAX_KEY_FILE + 1])
            .unwrap_err()
            .contains("larger"));
    }

    #[test]
    fn der_reader_is_strict() {
        let rsa = der(RSA_PUBLIC);
        assert!(spki_public_key(&rsa).is_ok());
        let mut trailing = rsa.clone();
        trailing.push(0);
        assert!(spki_public_key(&trailing).unwrap_err().contains("trailing"));
        // non-minimal long-form length
        assert!(der_take(&mut &[0x30u8, 0x81, 0x01, 0x00][..], 0x30).is_err());
        // indefinite length
        assert!(der_take(&mut &[0x30u8, 0x80, 0x00, 0x00][..], 0x30).is_err());
        // length beyond the data
        assert!(der_take(&mut &[0x30u8, 0x05, 0x00][..], 0x30).is_err());
        // leading zero in a long-form length
        assert!(der_take(&mut &[0x30u8, 0x82, 0x00, 0x80][..], 0x30).is_err());
        let mut ok: &[u8] = &[0x04, 0x01, 0xaa, 0x05, 0x00];
        assert_eq!(der_take(&mut ok, 0x04).unwrap(), [0xaa]);
        assert_eq!(ok, [0x05, 0x00]);
        // negative RSA modulus
        assert!(rsa_public_key(&[0x30, 0x06, 0x02, 0x01, 0x80, 0x02, 0x01, 0x03]).is_err());
        // both RSA encodings give the same key
        let (n, e) = rsa_public_key(&der(RSA_PUBLIC_PKCS1)).unwrap();
        assert_eq!(
            spki_public_key(&rsa).unwrap(),
            PublicKeyData::Rsa { n: n.clone(), e }
        );
        assert_eq!(bit_len(&n), 2048);
    }

    // ---- the JWKS cache ----

    /// A fetch closure double: answers from a script and counts calls.
    struct Source {
        answers: std::cell::RefCell<Vec<Result<Vec<u8>, SsoError>>>,
        calls: Cell<usize>,
    }

    impl Source {
        fn new(answers: Vec<Result<Vec<u8>, SsoError>>) -> Source {
            Source {
                answers: std::cell::RefCell::new(answers),
                calls: Cell::new(0),
            }
        }
        fn fetch(&self) -> Result<Vec<u8>, SsoError> {
            self.calls.set(self.calls.get() + 1);
            let mut a = self.answers.borrow_mut();
            if a.len() > 1 {
                a.remove(0)
            } else {
                a[0].clone()
            }
        }
    }

    fn set_of(keys: &[Value]) -> Result<Vec<u8>, SsoError> {
        Ok(json!({ "keys": keys }).to_string().into_bytes())
    }

    #[test]
    fn cache_fetches_lazily_and_not_for_opaque_tokens() {
        let src = Source::new(vec![set_of(&[jwk(RSA_PUBLIC, Some("rsa1"), None)])]);
        let mut f = || src.fetch();
        let mut cache = JwksCache::default();
        assert!(cache.current().is_none() && cache.fetched_at().is_none());
        assert_eq!(
            cache.validate_with_refresh("opaque", &policy(), NOW, &mut f),
            Err(JwtError::NotAJwt)
        );
        assert_eq!(src.calls.get(), 0);
        let long = rs256(
            "rsa1",
            &with(claims(), "pad", json!("x".repeat(MAX_JWT_LEN))),
        );
        assert!(matches!(
            cache.validate_with_refresh(&long, &policy(), NOW, &mut f),
            Err(JwtError::Invalid(_))
        ));
        assert_eq!(src.calls.get(), 0);
        let token = rs256("rsa1", &claims());
        assert!(cache
            .validate_with_refresh(&token, &policy(), NOW, &mut f)
            .is_ok());
        assert!(cache
            .validate_with_refresh(&token, &policy(), NOW + 1, &mut f)
            .is_ok());
        assert_eq!(src.calls.get(), 1);
        assert_eq!(cache.fetched_at(), Some(NOW));
        assert_eq!(cache.current().unwrap().len(), 1);
    }

    #[test]
    fn a_check_without_keys_waits_for_the_fetch_in_flight() {
        let mut cache = JwksCache::new(3600, 15);
        let p = policy();
        let (first, second) = (rs256("old", &claims()), rs256("old", &claims()));
        assert!(matches!(
            cache.check(&first, &p, NOW),
            JwksCheck::Fetch(JwksFetchReason::Due)
        ));
        // Before the set arrives: wait, neither a second fetch nor "no keys".
        assert!(matches!(cache.check(&second, &p, NOW), JwksCheck::Wait));
        let body = set_of(&[jwk(RSA_PUBLIC, Some("old"), None)]);
        let done = cache.fetched(&first, &p, NOW, JwksFetchReason::Due, body);
        assert!(matches!(done, JwksCheck::Verdict(Ok(_))));
        assert!(matches!(
            cache.check(&second, &p, NOW),
            JwksCheck::Verdict(Ok(_))
        ));
        // A failed fetch ends the wait: the next check has its answer (no keys), not a wait.
        let mut failed = JwksCache::new(3600, 15);
        failed.check(&first, &p, NOW);
        failed.fetched(
            &first,
            &p,
            NOW,
            JwksFetchReason::Due,
            Err(SsoError::Timeout),
        );
        assert!(matches!(
            failed.check(&second, &p, NOW),
            JwksCheck::Verdict(Err(JwtError::NoKeys(_)))
        ));
        // ... and the rate limit holds after it: no new fetch before 15 s.
        assert!(matches!(
            failed.check(&second, &p, NOW + 5),
            JwksCheck::Verdict(Err(JwtError::NoKeys(_)))
        ));
    }

    #[test]
    fn a_fetch_never_answered_is_lost_after_its_budget() {
        let mut cache = JwksCache::new(3600, 15).with_fetch_budget(3);
        let p = policy();
        let token = rs256("old", &claims());
        assert!(matches!(
            cache.check(&token, &p, NOW),
            JwksCheck::Fetch(JwksFetchReason::Due)
        ));
        // Its request is dropped: checks within the budget still wait for it...
        assert!(matches!(cache.check(&token, &p, NOW + 2), JwksCheck::Wait));
        // ... past it the fetch is lost, and the next check fetches again at once, inside
        // the 15 s rate limit; that new fetch is waited for like the first.
        assert!(matches!(
            cache.check(&token, &p, NOW + 3),
            JwksCheck::Fetch(JwksFetchReason::Due)
        ));
        assert!(matches!(cache.check(&token, &p, NOW + 3), JwksCheck::Wait));
        // Lost once more: one new fetch per lost one, never a flood.
        assert!(matches!(
            cache.check(&token, &p, NOW + 6),
            JwksCheck::Fetch(JwksFetchReason::Due)
        ));
        let body = set_of(&[jwk(RSA_PUBLIC, Some("old"), None)]);
        let done = cache.fetched(&token, &p, NOW + 6, JwksFetchReason::Due, body);
        assert!(matches!(done, JwksCheck::Verdict(Ok(_))));
        // A clock stepped back past the fetch's start counts as lost too.
        let mut stepped = JwksCache::new(3600, 15).with_fetch_budget(3);
        stepped.check(&token, &p, NOW);
        assert!(matches!(
            stepped.check(&token, &p, NOW - 10),
            JwksCheck::Fetch(JwksFetchReason::Due)
        ));
    }

    #[test]
    fn cache_refetches_for_an_unknown_kid_at_most_every_15s() {
        let src = Source::new(vec![
            set_of(&[jwk(RSA_PUBLIC, Some("old"), None)]),
            set_of(&[jwk(RSA_PUBLIC, Some("old"), None)]),
            set_of(&[jwk(RSA_PUBLIC, Some("new"), None)]),
        ]);
        let mut f = || src.fetch();
        let mut cache = JwksCache::new(3600, 15);
        let p = policy();
        assert!(cache
            .validate_with_refresh(&rs256("old", &claims()), &p, NOW, &mut f)
            .is_ok());
        assert_eq!(src.calls.get(), 1);
        // right after the first fetch, an unknown kid does not fetch again
        let new = rs256("new", &claims());
        assert!(matches!(
            cache.validate_with_refresh(&new, &p, NOW + 14, &mut f),
            Err(JwtError::UnknownKey { .. })
        ));
        assert_eq!(src.calls.get(), 1);
        // 15 s later it may: the set has not rotated yet
        assert!(matches!(
            cache.validate_with_refresh(&new, &p, NOW + 15, &mut f),
            Err(JwtError::UnknownKey { .. })
        ));
        assert_eq!(src.calls.get(), 2);
        // a flood of made-up kids inside the window costs nothing
        for i in 0..100 {
            let t = rs256(&format!("junk{i}"), &claims());
            assert!(cache
                .validate_with_refresh(&t, &p, NOW + 20, &mut f)
                .is_err());
        }
        assert_eq!(src.calls.get(), 2);
        // the rotated set arrives at the next allowed attempt and the token passes
        assert!(cache
            .validate_with_refresh(&new, &p, NOW + 30, &mut f)
            .is_ok());
        assert_eq!(src.calls.get(), 3);
        assert!(cache
            .validate_with_refresh(&new, &p, NOW + 31, &mut f)
            .is_ok());
        assert_eq!(src.calls.get(), 3);
        // tokens for keys that left the set now fail
        assert!(cache
            .validate_with_refresh(&rs256("old", &claims()), &p, NOW + 32, &mut f)
            .is_err());
    }

    #[test]
    fn cache_refreshes_periodically_and_keeps_keys_when_a_fetch_fails() {
        let src = Source::new(vec![
            set_of(&[jwk(RSA_PUBLIC, Some("rsa1"), None)]),
            Err(SsoError::Timeout),
            Ok(b"<html>maintenance</html>".to_vec()),
            set_of(&[
                jwk(RSA_PUBLIC, Some("rsa1"), None),
                jwk(EC1_PUBLIC, Some("ec1"), None),
            ]),
        ]);
        let mut f = || src.fetch();
        let mut cache = JwksCache::new(600, 15);
        let p = policy();
        let token = rs256("rsa1", &with(claims(), "exp", json!(NOW + 10_000)));
        assert!(cache.validate_with_refresh(&token, &p, NOW, &mut f).is_ok());
        assert!(cache
            .validate_with_refresh(&token, &p, NOW + 599, &mut f)
            .is_ok());
        assert_eq!(src.calls.get(), 1);
        // due: the refresh times out, the old keys stay
        assert!(cache
            .validate_with_refresh(&token, &p, NOW + 600, &mut f)
            .is_ok());
        assert_eq!(src.calls.get(), 2);
        assert!(cache.last_error().unwrap().contains("timed out"));
        assert_eq!(cache.fetched_at(), Some(NOW));
        // still due, but not retried within 15 s
        assert!(cache
            .validate_with_refresh(&token, &p, NOW + 610, &mut f)
            .is_ok());
        assert_eq!(src.calls.get(), 2);
        // an unusable body is a failed fetch too
        assert!(cache
            .validate_with_refresh(&token, &p, NOW + 615, &mut f)
            .is_ok());
        assert_eq!(src.calls.get(), 3);
        assert!(cache.last_error().unwrap().contains("JSON"));
        assert_eq!(cache.current().unwrap().len(), 1);
        // then it works again
        assert!(cache
            .validate_with_refresh(&token, &p, NOW + 630, &mut f)
            .is_ok());
        assert_eq!(src.calls.get(), 4);
        assert_eq!(cache.last_error(), None);
        assert_eq!(cache.fetched_at(), Some(NOW + 630));
        assert_eq!(cache.current().unwrap().len(), 2);
    }

    #[test]
    fn cache_without_keys_reports_and_retries_slowly() {
        let src = Source::new(vec![
            Err(SsoError::Unreachable("connection refused".into())),
            Err(SsoError::Status(503)),
            set_of(&[jwk(RSA_PUBLIC, Some("rsa1"), None)]),
        ]);
        let mut f = || src.fetch();
        let mut cache = JwksCache::new(3600, 15);
        let token = rs256("rsa1", &claims());
        let e = cache
            .validate_with_refresh(&token, &policy(), NOW, &mut f)
            .unwrap_err();
        assert!(
            matches!(&e, JwtError::NoKeys(m) if m.contains("refused")),
            "{e}"
        );
        assert!(matches!(
            cache.keys(NOW + 10, &mut f),
            Err(JwtError::NoKeys(_))
        ));
        assert_eq!(src.calls.get(), 1);
        let e = cache
            .validate_with_refresh(&token, &policy(), NOW + 15, &mut f)
            .unwrap_err();
        assert!(
            matches!(&e, JwtError::NoKeys(m) if m.contains("503")),
            "{e}"
        );
        assert_eq!(src.calls.get(), 2);
        assert!(cache
            .validate_with_refresh(&token, &policy(), NOW + 30, &mut f)
            .is_ok());
        assert_eq!(src.calls.get(), 3);
    }

    #[test]
    fn cache_survives_a_clock_stepping_back() {
        let src = Source::new(vec![
            Err(SsoError::Timeout),
            set_of(&[jwk(RSA_PUBLIC, Some("rsa1"), None)]),
        ]);
        let mut f = || src.fetch();
        let mut cache = JwksCache::default();
        assert!(cache.keys(NOW, &mut f).is_err());
        // the clock went back an hour: do not wait an hour for the next attempt
        assert!(cache.keys(NOW - 3600, &mut f).is_ok());
        assert_eq!(src.calls.get(), 2);
        assert!(cache.keys(NOW - 3599, &mut f).is_ok());
        assert_eq!(src.calls.get(), 2);
    }
}
