//! Tokens: local JWT validation, the claims an SSO answer carries, and the verdict cache
//! every worker shares.

pub mod cache;
pub mod claims;
pub mod jwt;
