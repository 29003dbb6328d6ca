//! Any topic string: no panic, and a parsed topic formats back to exactly the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use model::{Topic, parse_topic, valid_id};

fuzz_target!(|topic: &str| {
    if let Ok(t) = parse_topic(topic) {
        assert!(
            valid_id(t.device_id),
            "invalid device id accepted: {topic:?}"
        );
        assert_eq!(Topic::format(t.device_id, t.kind), topic);
    }
});
