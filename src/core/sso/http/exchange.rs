//! One HTTP/1.1 request and its response as bytes, with no socket in sight: the request is
//! written out whole at the start (SSO requests are small), and response bytes are fed in
//! as they arrive. ureq-proto does the HTTP: request line and headers, status line, header
//! parsing, Content-Length / chunked / close-delimited bodies, keep-alive or close.

use ureq_proto::client::state::{RecvBody, RecvResponse};
use ureq_proto::client::{Call, RecvBodyResult, RecvResponseResult, SendRequestResult};
use ureq_proto::BodyMode;

use super::{truncate, HttpRequest, HttpResponse};
use crate::core::sso::{SsoError, MAX_SSO_BODY};

/// Largest response head (status line and headers) accepted.
const MAX_HEAD: usize = 64 * 1024;

enum State {
    Head(Call<RecvResponse>),
    Body {
        call: Call<RecvBody>,
        status: u16,
        must_close: bool,
    },
    Finished,
}

pub struct Exchange {
    out: Vec<u8>,
    sent: usize,
    state: State,
    /// Response bytes received and not yet consumed by the parser.
    input: Vec<u8>,
    body: Vec<u8>,
    /// Any byte of the answer arrived: a failure can no longer be retried.
    answered: bool,
}

/// Where an exchange stands after new input.
pub enum Progress {
    /// More response bytes are needed.
    Pending,
    /// The answer is complete; `reusable`: the connection may carry another request.
    Done(HttpResponse, bool),
}

fn proto(e: ureq_proto::Error) -> SsoError {
    SsoError::Unreachable(truncate(format!("bad HTTP answer from the SSO: {e}")))
}

impl Exchange {
    pub fn new(req: &HttpRequest) -> Result<Exchange, SsoError> {
        let mut builder = ureq_proto::http::Request::builder()
            .method(req.method)
            .uri(format!(
                "{}://{}{}",
                if req.origin.https { "https" } else { "http" },
                req.host_header(),
                req.target
            ));
        for (name, value) in &req.headers {
            builder = builder.header(*name, value.as_str());
        }
        if req.method == "POST" {
            // Explicit, so the body goes out with a length and not chunked.
            builder = builder.header("Content-Length", req.body.len().to_string());
        }
        let request = builder
            .body(())
            .map_err(|_| SsoError::Unreachable("cannot build the SSO request".to_string()))?;
        let call = Call::new(request).map_err(|e| {
            SsoError::Unreachable(truncate(format!("cannot build the SSO request: {e}")))
        })?;
        let mut call = call.proceed();
        let mut out = Vec::with_capacity(1024 + req.body.len());
        let mut buf = vec![0u8; 16 * 1024];
        while !call.can_proceed() {
            let n = call.write(&mut buf).map_err(proto)?;
            out.extend_from_slice(&buf[..n]);
        }
        title_case_names(&mut out);
        let head = match call.proceed().map_err(proto)? {
            Some(SendRequestResult::RecvResponse(c)) => c,
            Some(SendRequestResult::SendBody(mut c)) => {
                let mut rest: &[u8] = &req.body;
                loop {
                    let (used, n) = c.write(rest, &mut buf).map_err(proto)?;
                    out.extend_from_slice(&buf[..n]);
                    rest = &rest[used..];
                    if rest.is_empty() {
                        let (_, n) = c.write(&[], &mut buf).map_err(proto)?;
                        out.extend_from_slice(&buf[..n]);
                        break;
                    }
                }
                c.proceed().ok_or_else(|| {
                    SsoError::Unreachable("cannot write the SSO request".to_string())
                })?
            }
            _ => {
                return Err(SsoError::Unreachable(
                    "cannot write the SSO request".to_string(),
                ))
            }
        };
        Ok(Exchange {
            out,
            sent: 0,
            state: State::Head(head),
            input: Vec::new(),
            body: Vec::new(),
            answered: false,
        })
    }

    /// Request bytes not sent yet.
    pub fn unsent(&self) -> &[u8] {
        &self.out[self.sent..]
    }

    /// Request bytes handed to the connection so far.
    pub fn sent(&self) -> usize {
        self.sent
    }

    pub fn mark_sent(&mut self, n: usize) {
        self.sent = (self.sent + n).min(self.out.len());
    }

    /// True once any byte of the answer arrived.
    pub fn answered(&self) -> bool {
        self.answered
    }

    /// Feeds response bytes in.
    pub fn received(&mut self, bytes: &[u8]) -> Result<Progress, SsoError> {
        if !bytes.is_empty() {
            self.answered = true;
            self.input.extend_from_slice(bytes);
        }
        self.advance(false)
    }

    /// The server closed its side: a close-delimited body ends here, anything else was cut.
    pub fn closed(&mut self) -> Result<Progress, SsoError> {
        self.advance(true)
    }

    fn advance(&mut self, eof: bool) -> Result<Progress, SsoError> {
        loop {
            match std::mem::replace(&mut self.state, State::Finished) {
                State::Finished => {
                    return Err(SsoError::Unreachable(
                        "the SSO exchange is already over".to_string(),
                    ))
                }
                State::Head(mut call) => {
                    let (used, resp) = call.try_response(&self.input, false).map_err(proto)?;
                    self.input.drain(..used);
                    let Some(resp) = resp else {
                        if call.can_proceed() {
                            // cannot happen without a response; treated as a parse failure
                            return Err(SsoError::Unreachable(
                                "bad HTTP answer from the SSO".to_string(),
                            ));
                        }
                        if self.input.len() > MAX_HEAD {
                            return Err(SsoError::TooLarge);
                        }
                        if used > 0 {
                            // a 1xx was skipped; the final answer may already be here
                            self.state = State::Head(call);
                            continue;
                        }
                        self.state = State::Head(call);
                        if eof {
                            return Err(cut_short(self.answered));
                        }
                        return Ok(Progress::Pending);
                    };
                    let status = resp.status().as_u16();
                    // An announced body past the limit is refused before it is read.
                    let announced = resp
                        .headers()
                        .get("content-length")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok());
                    if announced.is_some_and(|n| n > MAX_SSO_BODY as u64) {
                        return Err(SsoError::TooLarge);
                    }
                    match call.proceed() {
                        Some(RecvResponseResult::RecvBody(call)) => {
                            self.state = State::Body {
                                call,
                                status,
                                must_close: false,
                            };
                        }
                        Some(RecvResponseResult::Cleanup(c)) => {
                            let reusable = !c.must_close_connection() && self.input.is_empty();
                            return Ok(self.finish(status, reusable));
                        }
                        // 3xx: never followed; the connection is not worth keeping.
                        Some(RecvResponseResult::Redirect(_)) => {
                            return Ok(self.finish(status, false));
                        }
                        None => {
                            return Err(SsoError::Unreachable(
                                "bad HTTP answer from the SSO".to_string(),
                            ))
                        }
                    }
                }
                State::Body {
                    mut call,
                    status,
                    must_close,
                } => {
                    let mut chunk = [0u8; 16 * 1024];
                    loop {
                        // never more than one byte past the limit
                        let room = (MAX_SSO_BODY + 1 - self.body.len()).min(chunk.len());
                        let (used, n) =
                            call.read(&self.input, &mut chunk[..room]).map_err(proto)?;
                        self.input.drain(..used);
                        self.body.extend_from_slice(&chunk[..n]);
                        if self.body.len() > MAX_SSO_BODY {
                            return Err(SsoError::TooLarge);
                        }
                        if used == 0 && n == 0 {
                            break;
                        }
                    }
                    let close_delimited = matches!(call.body_mode(), BodyMode::CloseDelimited);
                    if close_delimited {
                        if !eof {
                            self.state = State::Body {
                                call,
                                status,
                                must_close: true,
                            };
                            return Ok(Progress::Pending);
                        }
                        return Ok(self.finish(status, false));
                    }
                    if !call.can_proceed() {
                        self.state = State::Body {
                            call,
                            status,
                            must_close,
                        };
                        if eof {
                            return Err(cut_short(true));
                        }
                        return Ok(Progress::Pending);
                    }
                    let reusable = match call.proceed() {
                        Some(RecvBodyResult::Cleanup(c)) => !c.must_close_connection(),
                        _ => false,
                    };
                    // Bytes past the answer on a keep-alive connection: do not trust it again.
                    let reusable = reusable && !must_close && self.input.is_empty() && !eof;
                    return Ok(self.finish(status, reusable));
                }
            }
        }
    }

    fn finish(&mut self, status: u16, reusable: bool) -> Progress {
        Progress::Done(
            HttpResponse {
                status,
                body: std::mem::take(&mut self.body),
            },
            reusable,
        )
    }
}

/// http's header names are lower case; they go out as `Content-Type`, as every client
/// writes them, for servers (and their logs) that compare names by case.
fn title_case_names(head: &mut [u8]) {
    let mut line_start = true;
    let mut in_name = false;
    let mut first_line = true;
    let mut word_start = false;
    for b in head.iter_mut() {
        if line_start {
            in_name = !first_line;
            word_start = true;
            line_start = false;
        }
        match *b {
            b'\n' => {
                line_start = true;
                first_line = false;
            }
            b':' => in_name = false,
            b'-' => word_start = true,
            _ if in_name && word_start => {
                b.make_ascii_uppercase();
                word_start = false;
            }
            _ => {}
        }
    }
}

fn cut_short(answered: bool) -> SsoError {
    SsoError::Unreachable(
        if answered {
            "the SSO closed the connection in the middle of its answer"
        } else {
            "the SSO closed the connection without answering"
        }
        .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::super::Origin;
    use super::*;

    fn req() -> HttpRequest {
        HttpRequest {
            origin: Origin {
                https: false,
                host: "127.0.0.1".into(),
                port: 8080,
            },
            method: "POST",
            target: "/introspect?x=1".into(),
            headers: vec![("Accept", "application/json".into())],
            body: b"token=t".to_vec(),
        }
    }

    fn done(p: Progress) -> (HttpResponse, bool) {
        match p {
            Progress::Done(r, k) => (r, k),
            Progress::Pending => panic!("pending"),
        }
    }

    #[test]
    fn writes_the_request_whole() {
        let ex = Exchange::new(&req()).unwrap();
        let text = String::from_utf8(ex.unsent().to_vec()).unwrap();
        assert!(
            text.starts_with("POST /introspect?x=1 HTTP/1.1\r\n"),
            "{text}"
        );
        assert!(text
            .to_ascii_lowercase()
            .contains("host: 127.0.0.1:8080\r\n"));
        assert!(text.to_ascii_lowercase().contains("content-length: 7\r\n"));
        assert!(text.ends_with("\r\n\r\ntoken=t"), "{text}");
    }

    #[test]
    fn parses_byte_by_byte_length_and_chunked() {
        for (wire, reusable) in [
            (&b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"[..], true),
            (
                &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\no\r\n1\r\nk\r\n0\r\n\r\n"[..],
                true,
            ),
            (
                &b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"[..],
                false,
            ),
        ] {
            let mut ex = Exchange::new(&req()).unwrap();
            let mut out = None;
            for b in wire {
                if let Progress::Done(r, k) = ex.received(std::slice::from_ref(b)).unwrap() {
                    out = Some((r, k));
                }
            }
            let (r, k) = out.expect("finished");
            assert_eq!((r.status, r.body.as_slice(), k), (200, &b"ok"[..], reusable));
        }
    }

    #[test]
    fn close_delimited_ends_at_eof_and_cut_bodies_fail() {
        let mut ex = Exchange::new(&req()).unwrap();
        assert!(matches!(
            ex.received(b"HTTP/1.1 200 OK\r\n\r\nhello").unwrap(),
            Progress::Pending
        ));
        let (r, k) = done(ex.closed().unwrap());
        assert_eq!((r.body.as_slice(), k), (&b"hello"[..], false));

        let mut ex = Exchange::new(&req()).unwrap();
        let _ = ex.received(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nhel");
        assert!(matches!(ex.closed(), Err(SsoError::Unreachable(_))));

        let mut ex = Exchange::new(&req()).unwrap();
        assert!(!ex.answered());
        assert!(matches!(ex.closed(), Err(SsoError::Unreachable(_))));
    }

    #[test]
    fn limits_and_garbage() {
        let mut ex = Exchange::new(&req()).unwrap();
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
            MAX_SSO_BODY + 1
        );
        assert_eq!(ex.received(head.as_bytes()).err(), Some(SsoError::TooLarge));
        let mut ex = Exchange::new(&req()).unwrap();
        assert!(matches!(
            ex.received(b"SSH-2.0-OpenSSH\r\n\r\n"),
            Err(SsoError::Unreachable(_))
        ));
        let mut ex = Exchange::new(&req()).unwrap();
        let (r, k) = done(
            ex.received(b"HTTP/1.1 302 Found\r\nLocation: /x\r\nContent-Length: 0\r\n\r\n")
                .unwrap(),
        );
        assert_eq!((r.status, k), (302, false));
    }
}
