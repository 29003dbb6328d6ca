//! sim-twin's specification: the HTTP API driven over real HTTP against the running service.
//! The engine's own specification (determinism, realism, golden roasts) lives with it, in
//! `crates/sim-engine`. `traces`: the spans it exports, as a collector receives them.
#![allow(clippy::unwrap_used)] // In tests a panic is the assertion.

mod api;
mod traces;
