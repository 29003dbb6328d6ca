//! The command service's specification, driven through its public surfaces: HTTP with bearer
//! tokens, a private broker carrying the device's session, telemetry, commands and signed acks
//! (a fake device in the test, with a file keystore), and the audit table in a real PostgreSQL.
#![allow(clippy::unwrap_used)] // In tests a panic is the assertion.

mod common;
mod drill;
mod lifecycle;
mod surface;
