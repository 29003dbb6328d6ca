//! company-kernel's specification, driven through its HTTP API on PostgreSQL and on its own
//! SQLite file: missions submitted once per idempotency key, claimed by priority, finished only
//! by the claim that holds them, retried after a failure or a worker gone silent, dead after
//! the last attempt with every reason kept; its metrics as Prometheus reads them.
#![allow(clippy::unwrap_used)] // In tests a panic is the assertion.

mod queue;
