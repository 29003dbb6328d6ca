//! Metrics of company-kernel (names: `simcorp_company_kernel_*`).

use metrics::{Unit, counter, describe_counter};

const SUBMITTED: &str = "simcorp_company_kernel_missions_submitted_total";
const CLAIMED: &str = "simcorp_company_kernel_missions_claimed_total";
const ENDED: &str = "simcorp_company_kernel_attempts_ended_total";

/// How an attempt ended.
const OUTCOMES: [&str; 4] = ["done", "failed", "lease_expired", "dead"];

pub(crate) fn submitted(created: bool) {
    counter!(SUBMITTED, "created" => if created { "true" } else { "false" }).increment(1);
}

pub(crate) fn claimed() {
    counter!(CLAIMED).increment(1);
}

pub(crate) fn ended(outcome: &'static str, n: u64) {
    counter!(ENDED, "outcome" => outcome).increment(n);
}

/// Describes company-kernel's metrics, registering them at zero.
pub(crate) fn describe() {
    describe_counter!(
        SUBMITTED,
        Unit::Count,
        "Missions submitted; created=false when the idempotency key already had one."
    );
    describe_counter!(CLAIMED, Unit::Count, "Missions claimed by a worker.");
    describe_counter!(
        ENDED,
        Unit::Count,
        "Attempts ended, by outcome (done; failed or lease_expired and retried; dead: the last attempt failed or the deadline passed)."
    );
    for created in ["true", "false"] {
        counter!(SUBMITTED, "created" => created).increment(0);
    }
    counter!(CLAIMED).increment(0);
    for o in OUTCOMES {
        counter!(ENDED, "outcome" => o).increment(0);
    }
}
