//! An Ed-Fi ODS/API-compatible HTTP server over a simulated world: OAuth client
//! credentials, discovery, change queries, the three attendance resources with
//! offset/limit and partition/page-token paging, deletes and key changes, injectable
//! faults, and control endpoints that move the simulated clock.

pub mod json;
mod server;

pub use server::{serve, EdfiServer, Faults, ServerOptions, SimHandle, SimState};
