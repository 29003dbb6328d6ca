//! Any payload on `roasters/{id}/telemetry`: no panic, and whatever is accepted is valid.
#![no_main]

use libfuzzer_sys::fuzz_target;
use model::{Limits, decode_telemetry, invariants::check_decoded};

const NOW: i64 = 1_795_000_000_000;

fuzz_target!(|payload: &[u8]| {
    // Tight limits too, so that the frame and channel limits are exercised by short inputs.
    for limits in [
        Limits::default(),
        Limits {
            max_frame_points: 3,
            max_channels: 2,
            ..Limits::default()
        },
    ] {
        if let Ok(decoded) = decode_telemetry("r-1", payload, NOW, &limits) {
            if let Err(broken) = check_decoded("r-1", &decoded, NOW, &limits) {
                panic!("{broken}");
            }
        }
    }
});
