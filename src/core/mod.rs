//! The pure-Rust heart of the module: parsers, Digest and nonce work, identity rules, the SSO
//! client and the authorization decision. Nothing here knows about OpenSIPS types.

pub mod authorize;
pub mod cluster;
pub mod config;
pub mod digest;
pub mod identity;
pub mod shm;
pub mod sso;
pub mod stats;
pub mod text;
pub mod token;
