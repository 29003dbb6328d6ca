//! Integration tests of the store against real databases: one suite run on every backend
//! (`suite`), what only PostgreSQL has (`postgres`), the domains' migrations on both backends
//! (`migrations`), analytics' reference profiles on both (`analytics`), the command service's
//! tables (`commands`) and the mission queue (`missions`) on both, and the durable store's
//! fallback and replay across a real PostgreSQL outage (`durable`).
#![allow(clippy::unwrap_used)] // A panic is how a test and its helpers report failure.

mod analytics;
mod commands;
mod common;
mod durable;
mod migrations;
mod missions;
mod postgres;
mod suite;
