//! sim-twin's specification: the HTTP API driven over real HTTP against `run`. The engine's own
//! specification (determinism, realism, golden roasts) lives with it, in `crates/sim-engine`.
#![allow(clippy::unwrap_used)] // In tests a panic is the assertion.
#![allow(unreachable_pub)] // Helpers are shared between the modules of this one binary.

mod helpers;

mod api;
