//! analytics' specification, driven through its public surfaces: reference profiles over HTTP
//! (`profiles`), roasts published over MQTT to a private broker with ingestion and
//! event-inference running, their summaries, variance and predictions read back over HTTP
//! (`roasts`), gas corrections proposed to a running command service (`corrections`), and the
//! live roast view in a real headless Chromium (`view`).
#![allow(clippy::unwrap_used)] // In tests a panic is the assertion.

mod common;
mod corrections;
mod profiles;
mod roasts;
mod view;
