//! Any payload on `roasters/{id}/session`: no panic, and whatever is accepted is valid.
#![no_main]

use libfuzzer_sys::fuzz_target;
use model::{Limits, decode_session, invariants::check_session};

const NOW: i64 = 1_795_000_000_000;

fuzz_target!(|payload: &[u8]| {
    let limits = Limits::default();
    if let Ok(event) = decode_session("r-1", payload, NOW, &limits) {
        if let Err(broken) = check_session("r-1", &event, NOW, &limits) {
            panic!("{broken}");
        }
    }
});
