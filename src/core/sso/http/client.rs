//! The per-process client state behind `HttpSso`: the keep-alive pool, the in-flight limit,
//! the resolver and the TLS setup, and the two ways of running a request through them.

use std::sync::Arc;
use std::time::Instant;

use super::attempt::Attempt;
use super::nonblocking::{InFlight, Round};
use super::pool::{Pool, Slot, Slots};
use super::{blocking, HttpRequest, HttpResponse};
use crate::core::sso::call::Expect;
use crate::core::sso::resolve::{LiteralsOnly, Resolve};
use crate::core::sso::SsoError;

pub struct Client {
    pool: Pool,
    slots: Slots,
    max: usize,
    resolver: Box<dyn Resolve>,
    tls: Arc<rustls::ClientConfig>,
}

impl Client {
    pub fn new(tls: Arc<rustls::ClientConfig>, max_connections: usize) -> Client {
        let max = max_connections.max(1);
        Client {
            pool: Pool::new(max),
            slots: Slots::default(),
            max,
            resolver: Box::new(LiteralsOnly),
            tls,
        }
    }

    pub fn set_resolver(&mut self, resolver: Box<dyn Resolve>) {
        self.resolver = resolver;
    }

    pub fn max_connections(&self) -> usize {
        self.max
    }

    /// Exchanges in flight now (blocking ones included while they run).
    pub fn in_flight(&self) -> usize {
        self.slots.busy()
    }

    /// Idle keep-alive connections held.
    pub fn idle(&self) -> usize {
        self.pool.idle()
    }

    /// A slot, the addresses and a connection (pooled or new) for `req`; never waits.
    fn begin(&mut self, req: HttpRequest) -> Result<(Attempt, Slot), SsoError> {
        // Past the limit the answer is at once: a queue would only turn into timeouts.
        let slot = self.slots.take(self.max).ok_or_else(|| {
            SsoError::Unreachable(format!("all {} SSO connections busy", self.max))
        })?;
        let addrs = self.resolver.resolve(&req.origin.host, req.origin.port)?;
        let pooled = self.pool.take(&req.origin);
        let attempt = Attempt::start(req, addrs, Some(self.tls.clone()), pooled)?;
        Ok((attempt, slot))
    }

    /// Runs `req` to its end or to `deadline`, waiting in poll(2).
    pub fn blocking(
        &mut self,
        req: HttpRequest,
        deadline: Instant,
    ) -> Result<HttpResponse, SsoError> {
        if Instant::now() >= deadline {
            return Err(SsoError::Timeout);
        }
        let origin = req.origin.clone();
        let (mut attempt, slot) = self.begin(req)?;
        let (result, conn) = blocking::run(&mut attempt, deadline);
        drop(attempt);
        drop(slot);
        if let Some(conn) = conn {
            self.pool.put(&origin, conn);
        }
        result
    }

    /// Starts `req` without waiting; Err: it is over already, with this result.
    pub fn start(
        &mut self,
        req: HttpRequest,
        deadline: Instant,
        expect: Expect,
    ) -> Result<InFlight, Result<HttpResponse, SsoError>> {
        if Instant::now() >= deadline {
            return Err(Err(SsoError::Timeout));
        }
        let origin = req.origin.clone();
        let (attempt, slot) = self.begin(req).map_err(Err)?;
        match InFlight::start(attempt, slot, deadline, expect, origin.clone()) {
            Ok(f) => Ok(f),
            Err((result, conn)) => {
                if let Some(conn) = conn {
                    self.pool.put(&origin, conn);
                }
                Err(result)
            }
        }
    }

    /// Moves `f` on; None while it is still in flight.
    pub fn progress(&mut self, f: &mut InFlight) -> Option<Result<HttpResponse, SsoError>> {
        match f.round() {
            Round::Pending => None,
            Round::Done(result, conn) => {
                if let Some(conn) = conn {
                    self.pool.put(&f.origin, conn);
                }
                Some(result)
            }
        }
    }
}
