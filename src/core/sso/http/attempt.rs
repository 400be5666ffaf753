//! One request carried to its answer over one connection at a time: the part both drivers
//! step. A connection from the pool that fails before any byte of the answer arrived was
//! most likely closed by the server while idle; the request then goes once more over a
//! fresh connection. A connect that fails moves on to the next address.

use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::Arc;

use super::conn::{Conn, Recv};
use super::exchange::{Exchange, Progress};
use super::sys::Want;
use super::{HttpRequest, HttpResponse};
use crate::core::sso::SsoError;

pub struct Attempt {
    req: HttpRequest,
    addrs: Vec<SocketAddr>,
    /// Index of the next address to try for a fresh connection.
    next_addr: usize,
    tls: Option<Arc<rustls::ClientConfig>>,
    /// None once the attempt handed its connection back.
    conn: Option<Conn>,
    ex: Exchange,
    retried: bool,
}

pub enum Step {
    /// Waiting for the socket to become ready for this.
    Pending(Want),
    /// Over; the connection comes back when it may carry another request.
    Done(Result<HttpResponse, SsoError>, Option<Conn>),
}

impl Attempt {
    /// Prepares the request and opens (or reuses) a connection. Never waits.
    pub fn start(
        req: HttpRequest,
        addrs: Vec<SocketAddr>,
        tls: Option<Arc<rustls::ClientConfig>>,
        pooled: Option<Conn>,
    ) -> Result<Attempt, SsoError> {
        let ex = Exchange::new(&req)?;
        let mut next_addr = 0;
        let conn = Some(match pooled {
            Some(c) => c,
            None => open(&req, &addrs, &mut next_addr, &tls)?,
        });
        Ok(Attempt {
            req,
            addrs,
            next_addr,
            tls,
            conn,
            ex,
            retried: false,
        })
    }

    /// The socket the attempt currently waits on (it changes on a retry).
    pub fn fd(&self) -> RawFd {
        self.conn.as_ref().map_or(-1, Conn::fd)
    }

    /// Does all that can be done without waiting.
    pub fn step(&mut self) -> Step {
        loop {
            let e = match self.try_step() {
                Ok(step) => return step,
                Err(e) => e,
            };
            let nothing_back = !self.ex.answered();
            let reused = self.conn.as_ref().is_some_and(|c| c.reused);
            let fresh_needed = if reused && nothing_back && !self.retried {
                // the server's idle close, most likely: once more from the first address
                self.retried = true;
                self.next_addr = 0;
                true
            } else {
                // a connect that failed: the next address, if any
                !reused && nothing_back && self.ex.sent() == 0 && self.next_addr < self.addrs.len()
            };
            if !fresh_needed {
                return Step::Done(Err(e), None);
            }
            let again = Exchange::new(&self.req).and_then(|ex| Ok((ex, self.reopen()?)));
            match again {
                Ok((ex, conn)) => {
                    self.ex = ex;
                    self.conn = Some(conn);
                }
                Err(e2) => return Step::Done(Err(e2), None),
            }
        }
    }

    fn reopen(&mut self) -> Result<Conn, SsoError> {
        open(&self.req, &self.addrs, &mut self.next_addr, &self.tls)
    }

    fn try_step(&mut self) -> Result<Step, SsoError> {
        let Some(conn) = self.conn.as_mut() else {
            return Err(SsoError::Unreachable(
                "the SSO exchange is already over".to_string(),
            ));
        };
        while !self.ex.unsent().is_empty() {
            let n = conn.send(self.ex.unsent())?;
            if n == 0 {
                break;
            }
            self.ex.mark_sent(n);
        }
        // TLS records queued by the session (handshake, the request) go out too.
        conn.send(&[])?;
        let mut buf = [0u8; 16 * 1024];
        loop {
            let progress = match conn.recv(&mut buf)? {
                Recv::Data(n) => self.ex.received(&buf[..n])?,
                Recv::Eof => self.ex.closed()?,
                Recv::Blocked => break,
            };
            if let Progress::Done(resp, reusable) = progress {
                let conn = self.conn.take().filter(|_| reusable);
                return Ok(Step::Done(Ok(resp), conn));
            }
        }
        Ok(Step::Pending(conn.want(!self.ex.unsent().is_empty())))
    }
}

/// A fresh connection to the first address from `*next` that does not fail at once.
fn open(
    req: &HttpRequest,
    addrs: &[SocketAddr],
    next: &mut usize,
    tls: &Option<Arc<rustls::ClientConfig>>,
) -> Result<Conn, SsoError> {
    let mut last = SsoError::Unreachable("no address for the SSO host".to_string());
    while *next < addrs.len() {
        let addr = addrs[*next];
        *next += 1;
        let tls = match (req.origin.https, tls) {
            (false, _) => None,
            (true, Some(cfg)) => Some((cfg.clone(), req.origin.host.as_str())),
            (true, None) => {
                return Err(SsoError::Unreachable(
                    "https requested without a TLS setup".to_string(),
                ))
            }
        };
        match Conn::open(addr, tls) {
            Ok(c) => return Ok(c),
            Err(e) => last = e,
        }
    }
    Err(last)
}
