//! The test kit's own checks: private servers start, stop and restart as the drills need, and
//! the headless browser sees what a page is pushed.
#![allow(clippy::unwrap_used)] // In tests a panic is the assertion.

mod browser;
mod servers;
