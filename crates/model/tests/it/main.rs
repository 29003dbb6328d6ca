//! Properties of the device contract's decoder: whatever arrives, it never panics, and what it
//! accepts is valid (`model::invariants`).
#![allow(clippy::unwrap_used)]
#![allow(unreachable_pub)]

mod properties;
