//! One connection to the SSO: a non-blocking TCP socket, with a rustls client session over
//! it for https. Every call does what it can without waiting and says what it needs next.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Instant;

use super::sys::{self, Want};
use super::truncate;
use crate::core::sso::SsoError;

pub struct Conn {
    sock: TcpStream,
    tls: Option<Box<rustls::ClientConnection>>,
    connecting: bool,
    /// Came from the pool: a failure before any answer may be the server's idle close.
    pub reused: bool,
    /// When it went back to the pool last.
    pub idle_since: Instant,
}

/// The outcome of reading: bytes, the peer's close, or nothing for now.
pub enum Recv {
    Data(usize),
    Eof,
    Blocked,
}

pub fn tls_error(e: &rustls::Error) -> SsoError {
    SsoError::Unreachable(truncate(format!("TLS with the SSO failed: {e}")))
}

impl Conn {
    /// Starts connecting to `addr`; `tls`: the config and the name the certificate must
    /// carry. Fails at once only when the kernel already knows the connect failed.
    pub fn open(
        addr: SocketAddr,
        tls: Option<(Arc<rustls::ClientConfig>, &str)>,
    ) -> Result<Conn, SsoError> {
        let (sock, connected) = sys::connect_nonblocking(addr)
            .map_err(|e| super::io_error("cannot connect to the SSO", &e))?;
        // The request goes out in one write; do not let Nagle hold back a TLS record.
        let _ = sock.set_nodelay(true);
        let tls = match tls {
            None => None,
            Some((config, host)) => {
                let name =
                    rustls::pki_types::ServerName::try_from(host.to_string()).map_err(|_| {
                        SsoError::Unreachable("the SSO host is not a valid TLS name".to_string())
                    })?;
                let session =
                    rustls::ClientConnection::new(config, name).map_err(|e| tls_error(&e))?;
                Some(Box::new(session))
            }
        };
        Ok(Conn {
            sock,
            tls,
            connecting: !connected,
            reused: false,
            idle_since: Instant::now(),
        })
    }

    pub fn fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    /// Finishes a non-blocking connect: Ok(true) once connected.
    fn connected(&mut self) -> Result<bool, SsoError> {
        if !self.connecting {
            return Ok(true);
        }
        let fail = |e: &io::Error| super::io_error("cannot connect to the SSO", e);
        if !sys::poll_one(self.fd(), Want::Write, 0).map_err(|e| fail(&e))? {
            return Ok(false);
        }
        if let Some(e) = sys::socket_error(self.fd()).map_err(|e| fail(&e))? {
            return Err(fail(&e));
        }
        self.connecting = false;
        Ok(true)
    }

    /// Sends what the socket takes of `data` (for TLS: hands it to the session, which
    /// sends it once the handshake is done). Returns how many bytes were taken.
    pub fn send(&mut self, data: &[u8]) -> Result<usize, SsoError> {
        if !self.connected()? {
            return Ok(0);
        }
        let taken = match &mut self.tls {
            Some(tls) => {
                let n = if data.is_empty() {
                    0
                } else {
                    tls.writer()
                        .write(data)
                        .map_err(|e| super::io_error("sending to the SSO", &e))?
                };
                self.flush_tls()?;
                n
            }
            None => {
                let mut n = 0;
                while n < data.len() {
                    match self.sock.write(&data[n..]) {
                        Ok(0) => break,
                        Ok(k) => n += k,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(super::io_error("sending to the SSO", &e)),
                    }
                }
                n
            }
        };
        Ok(taken)
    }

    /// Writes out TLS records the session holds, as far as the socket takes them.
    fn flush_tls(&mut self) -> Result<(), SsoError> {
        let Some(tls) = &mut self.tls else {
            return Ok(());
        };
        while tls.wants_write() {
            match tls.write_tls(&mut self.sock) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(super::io_error("sending to the SSO", &e)),
            }
        }
        Ok(())
    }

    /// Reads what has arrived into `buf`.
    pub fn recv(&mut self, buf: &mut [u8]) -> Result<Recv, SsoError> {
        if !self.connected()? {
            return Ok(Recv::Blocked);
        }
        let fail = |e: &io::Error| super::io_error("reading the SSO answer", e);
        if self.tls.is_none() {
            loop {
                return match self.sock.read(buf) {
                    Ok(0) => Ok(Recv::Eof),
                    Ok(n) => Ok(Recv::Data(n)),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Recv::Blocked),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => Err(fail(&e)),
                };
            }
        }
        let mut eof = false;
        loop {
            let tls = self.tls.as_mut().expect("an https connection");
            match tls.reader().read(buf) {
                Ok(0) => return Ok(Recv::Eof),
                Ok(n) => return Ok(Recv::Data(n)),
                // closed without close_notify: a close all the same
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(Recv::Eof),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(fail(&e)),
            }
            if eof {
                return Ok(Recv::Eof);
            }
            match tls.read_tls(&mut self.sock) {
                Ok(0) => eof = true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Recv::Blocked),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(fail(&e)),
            }
            if let Err(e) = tls.process_new_packets() {
                // Send the alert if the socket takes it; the error is what matters.
                let _ = tls.write_tls(&mut self.sock);
                return Err(tls_error(&e));
            }
            // Handshake answers, key updates: out as soon as the socket takes them.
            self.flush_tls()?;
        }
    }

    /// What to wait for next, given whether request bytes are still to be sent.
    pub fn want(&self, unsent: bool) -> Want {
        if self.connecting {
            return Want::Write;
        }
        match &self.tls {
            Some(tls) if tls.wants_write() => Want::Write,
            Some(_) => Want::Read,
            None if unsent => Want::Write,
            None => Want::Read,
        }
    }

    /// An idle pooled connection is worth reusing when nothing arrived on it meanwhile: a
    /// readable idle socket means the server closed it (or sent something unasked).
    pub fn idle_usable(&self) -> bool {
        !self.connecting && matches!(sys::poll_one(self.fd(), Want::Read, 0), Ok(false))
    }
}
