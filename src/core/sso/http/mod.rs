//! The SSO's HTTP/1.1 client, written once as a sans-IO exchange and driven two ways: a
//! blocking driver (poll(2) until the deadline) for the sync script functions, and a
//! non-blocking one (an epoll fd per request, for OpenSIPS's reactor) for the async form.
//! Both share one keep-alive pool per process and one limit on exchanges in flight.
//!
//! * `exchange` — request bytes out, response bytes in (ureq-proto), no sockets;
//! * `conn` — one non-blocking TCP socket, TLS (rustls) over it when https;
//! * `attempt` — one exchange over one connection, with the retry a stale keep-alive
//!   connection deserves; what both drivers step;
//! * `client` — the per-process state (pool, limit, resolver, TLS) and the two entry points;
//! * `pool` — idle keep-alive connections and the in-flight slots;
//! * `blocking`, `nonblocking` — the two drivers;
//! * `sys` — the few libc calls (socket, poll, epoll, timerfd).

use std::io;
use std::net::SocketAddr;

pub mod attempt;
pub mod blocking;
pub mod client;
pub mod conn;
pub mod exchange;
pub mod nonblocking;
pub mod pool;
pub mod sys;

use super::SsoError;

/// Longest transport error text kept, so a chatty library message cannot flood the log.
pub const MAX_ERROR_TEXT: usize = 200;

/// Where a request goes: the pool key and what opening a connection needs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    pub https: bool,
    /// As in the URL, IPv6 brackets removed.
    pub host: String,
    pub port: u16,
}

/// One request, owned, so a driver can send it again on a fresh connection.
#[derive(Clone)]
pub struct HttpRequest {
    pub origin: Origin,
    pub method: &'static str,
    /// Path and query, never empty.
    pub target: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

// The headers hold the Basic credentials, the body a token: neither goes to a log.
impl std::fmt::Debug for HttpRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpRequest")
            .field("origin", &self.origin)
            .field("method", &self.method)
            .finish_non_exhaustive()
    }
}

/// A finished exchange.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

impl HttpRequest {
    /// Builds a request for `url` (already checked by `check_url`).
    pub fn new(
        url: &str,
        method: &'static str,
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
    ) -> Result<HttpRequest, SsoError> {
        let parsed = url::Url::parse(url)
            .map_err(|_| SsoError::Unreachable("the SSO URL is not valid".to_string()))?;
        let https = match parsed.scheme() {
            "https" => true,
            "http" => false,
            _ => {
                return Err(SsoError::Unreachable(
                    "the SSO URL is not http or https".to_string(),
                ))
            }
        };
        let host = parsed
            .host_str()
            .ok_or_else(|| SsoError::Unreachable("the SSO URL has no host".to_string()))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = parsed
            .port_or_known_default()
            .unwrap_or(if https { 443 } else { 80 });
        let mut target = parsed.path().to_string();
        if target.is_empty() {
            target.push('/');
        }
        if let Some(q) = parsed.query() {
            target.push('?');
            target.push_str(q);
        }
        Ok(HttpRequest {
            origin: Origin { https, host, port },
            method,
            target,
            headers,
            body,
        })
    }

    /// The Host header value (brackets back around IPv6, port only when not the default).
    pub fn host_header(&self) -> String {
        let o = &self.origin;
        let host = if o.host.contains(':') {
            format!("[{}]", o.host)
        } else {
            o.host.clone()
        };
        let default = if o.https { 443 } else { 80 };
        if o.port == default {
            host
        } else {
            format!("{host}:{}", o.port)
        }
    }
}

pub fn truncate(mut s: String) -> String {
    if s.len() > MAX_ERROR_TEXT {
        let mut end = MAX_ERROR_TEXT;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

/// A socket error as the SSO error the module reports; the text names what failed and the
/// system's reason, never an address, URL or credential.
pub fn io_error(what: &str, e: &io::Error) -> SsoError {
    match e.kind() {
        io::ErrorKind::TimedOut => SsoError::Timeout,
        _ => SsoError::Unreachable(truncate(format!("{what}: {e}"))),
    }
}

/// The addresses to try, in order.
pub type Addrs = Vec<SocketAddr>;
