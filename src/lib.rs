//! sso_auth: an OpenSIPS module that authenticates SIP requests against an operator's SSO.
//!
//! `core` is plain Rust (no FFI types) and holds every decision; `ffi` is the thin layer that
//! OpenSIPS sees: the exports table, guarded trampolines, parameter storage, logging and replies.

pub mod core;
mod ffi;
