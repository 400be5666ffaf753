//! The blocking driver: steps an attempt and waits in poll(2) for what it needs, never past
//! the deadline (poll's timeout is the time left, rounded up to the millisecond).

use std::time::Instant;

use super::attempt::{Attempt, Step};
use super::conn::Conn;
use super::sys::{ceil_ms, poll_one};
use super::{io_error, HttpResponse};
use crate::core::sso::SsoError;

pub fn run(
    attempt: &mut Attempt,
    deadline: Instant,
) -> (Result<HttpResponse, SsoError>, Option<Conn>) {
    loop {
        let want = match attempt.step() {
            Step::Done(result, conn) => return (result, conn),
            Step::Pending(want) => want,
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (Err(SsoError::Timeout), None);
        }
        if let Err(e) = poll_one(attempt.fd(), want, ceil_ms(left)) {
            return (Err(io_error("waiting for the SSO", &e)), None);
        }
    }
}
