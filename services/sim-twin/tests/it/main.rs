//! sim-twin's specification: the engine's determinism and realism, golden roasts pinned byte for
//! byte, and the HTTP API driven over real HTTP against `run`.
//!
//! Golden files (`tests/golden/*.json`) pin whole roasts. A deliberate change to the model or the
//! built-in profiles changes them: regenerate with
//! `SIMCORP_UPDATE_GOLDEN=1 cargo test -p sim-twin --test it golden`, and review the diff (one
//! sample per line) before committing it.
#![allow(clippy::unwrap_used)] // In tests a panic is the assertion.
#![allow(unreachable_pub)] // Helpers are shared between the modules of this one binary.

mod helpers;

mod api;
mod determinism;
mod engine;
mod golden;
mod realism;
