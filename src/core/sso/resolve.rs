//! Host names of the SSO URLs to socket addresses, without ever blocking a request: a
//! resolver answers from what it already knows. IP literals need no lookup at all.

use std::net::{IpAddr, SocketAddr};

use super::SsoError;

// The shared-memory table the workers resolve from. Declared here rather than in
// `sso/mod.rs` so this change stays out of that file; the path keeps it beside this one.
#[path = "addresses.rs"]
pub mod addresses;

pub trait Resolve: Send + Sync {
    /// The addresses of `host` (as written in the URL, brackets removed), or an error at
    /// once when none are known. Never waits on the network.
    fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, SsoError>;
}

/// The address of an IP literal, if `host` is one.
pub fn literal(host: &str, port: u16) -> Option<SocketAddr> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.parse::<IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, port))
}

/// Only IP literals; any name is an error.
#[derive(Debug, Default, Clone, Copy)]
pub struct LiteralsOnly;

impl Resolve for LiteralsOnly {
    fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, SsoError> {
        literal(host, port)
            .map(|a| vec![a])
            .ok_or_else(|| SsoError::Unreachable(format!("no address known for host {host:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_resolve_and_names_do_not() {
        assert_eq!(
            LiteralsOnly.resolve("127.0.0.1", 80).unwrap(),
            vec!["127.0.0.1:80".parse().unwrap()]
        );
        assert_eq!(
            LiteralsOnly.resolve("[::1]", 443).unwrap(),
            vec!["[::1]:443".parse().unwrap()]
        );
        assert!(LiteralsOnly.resolve("sso.example.com", 443).is_err());
    }
}
