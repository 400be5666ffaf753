//! The thin layer OpenSIPS talks to: raw bindings (private), the panic guard, logging,
//! parameter storage, message access, replies, the exports table and the script functions.
//!
//! Everything that names an OpenSIPS core symbol is left out of the crate's own unit-test
//! build (those symbols only exist inside a running opensips); the layout tests and the guard
//! are tested there.

#[cfg(not(test))]
mod async_call;
#[cfg(not(test))]
mod async_hub;
mod bindings;
#[cfg(not(test))]
mod cachedb;
#[cfg(not(test))]
mod exports;
#[cfg(not(test))]
mod functions;
mod guard;
#[cfg(not(test))]
mod identity;
#[cfg(test)]
mod layout_tests;
#[cfg(not(test))]
mod log;
#[cfg(not(test))]
mod msg;
#[cfg(not(test))]
mod params;
#[cfg(not(test))]
mod pvar;
#[cfg(not(test))]
mod reply;
#[cfg(not(test))]
mod request;
#[cfg(not(test))]
mod resolver;
#[cfg(not(test))]
mod worker;
