//! event-inference's specification, driven through the platform's public surfaces: roasts
//! published over MQTT to a private broker (the project's config), ingestion storing them and
//! their events, the events read back over ingestion's HTTP API. `events`: what the service
//! does with a roast; `score`: how well, on the real and simulated roasts with a known truth.
#![allow(clippy::unwrap_used)] // In tests a panic is the assertion.

mod events;
mod score;
