//! The ingestion service's specification, driven through its public surfaces — MQTT in, SQL and
//! HTTP out — against real brokers and databases.
#![allow(clippy::unwrap_used)] // In tests a panic is the assertion.
#![allow(unreachable_pub)] // Helpers are shared between the modules of this one binary.

mod helpers;

mod api;
mod bad_input;
mod degraded;
mod delivery;
mod embedded;
mod events;
mod fallback;
mod faults;
mod flood;
mod shutdown;
mod signatures;
