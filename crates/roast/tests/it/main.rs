//! The detector against the truth, in process: the ten real roasts (their roaster's marks) and
//! seeded simulated roasts over every profile and batch size (the engine's own events). The
//! same roasts replayed through MQTT into a running platform are `cargo xtask score-events`.
//! And the first-crack prediction against the same roasts' truth (`predict`).
#![allow(clippy::unwrap_used)] // In tests a panic is the assertion.

mod bad_input;
mod predict;
mod real;
mod simulated;

use roast::score::Said;
use roast::{Detector, Priors, Reading};

/// Feeds readings to a fresh detector and ends the session; each event is said at the reading
/// that made it certain.
fn detect(priors: Priors, readings: impl IntoIterator<Item = Reading>) -> Vec<Said> {
    let mut detector = Detector::new(priors);
    let mut said = Vec::new();
    let mut last = 0;
    for reading in readings {
        last = reading.ts_ms;
        for e in detector.push(reading) {
            said.push(Said {
                kind: e.kind,
                ts_ms: e.ts_ms,
                said_ms: reading.ts_ms,
            });
        }
    }
    for e in detector.finish() {
        said.push(Said {
            kind: e.kind,
            ts_ms: e.ts_ms,
            said_ms: last,
        });
    }
    said
}
