//! The per-device flood limit: a token bucket of points per device.
//!
//! Every device shares ingestion's one MQTT stream, so a device publishing at 100× its normal
//! rate cannot be slowed down on its own: holding its messages back would hold back everyone
//! queued behind them. Instead its excess is *shed*: acknowledged to the broker without being
//! stored, and counted (`simcorp_ingestion_shed_messages_total`, `…_points_total`). The first
//! shed message of each episode is kept as a `rate_limited` dead letter, with a warning in the
//! log, so an operator sees who flooded and with what. After that, the device's messages are only
//! counted, which keeps the dead-letter table and the log bounded however long the flood lasts.
//! An episode ends when the device has been quiet long enough to refill its whole burst.
//!
//! The limit is far above what a roaster sends (one or two points a second). Refused input
//! counts against it too, so a stream of garbage is limited like a stream of points.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// Buckets kept before idle ones (full again) are forgotten.
const SWEEP_AT: usize = 10_000;

#[derive(Debug)]
pub(crate) struct DeviceLimiter {
    points_per_sec: u32,
    burst: f64,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    buckets: HashMap<String, Bucket>,
    sweep_at: usize,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
    /// In a shedding episode: it ends when the bucket is full again.
    shedding: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Admit,
    /// The first message shed in an episode: keep it as a dead letter.
    ShedFirst,
    Shed,
}

impl DeviceLimiter {
    /// `None` when `points_per_sec` is 0 (no limit).
    pub(crate) fn new(points_per_sec: u32, burst_points: u32) -> Option<Self> {
        (points_per_sec > 0).then(|| DeviceLimiter {
            points_per_sec,
            burst: f64::from(burst_points.max(points_per_sec)),
            state: Mutex::new(State {
                buckets: HashMap::new(),
                sweep_at: SWEEP_AT,
            }),
        })
    }

    pub(crate) fn points_per_sec(&self) -> u32 {
        self.points_per_sec
    }

    /// Charges `cost` points to `device` at `now`. A message is admitted whole or shed whole.
    pub(crate) fn admit(&self, device: &str, cost: usize, now: Instant) -> Verdict {
        let rate = f64::from(self.points_per_sec);
        // Poisoning needs a panic while holding the lock, and nothing in here panics.
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if state.buckets.len() >= state.sweep_at {
            let burst = self.burst;
            state
                .buckets
                .retain(|_, b| b.tokens + rate * now.duration_since(b.at).as_secs_f64() < burst);
            state.sweep_at = (state.buckets.len() * 2).max(SWEEP_AT);
        }
        let bucket = state
            .buckets
            .entry(device.to_owned())
            .or_insert_with(|| Bucket {
                tokens: self.burst,
                at: now,
                shedding: false,
            });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + rate * elapsed).min(self.burst);
        bucket.at = now;
        let cost = cost.max(1) as f64;
        if bucket.tokens >= cost {
            // The episode ends once the device has been quiet long enough to refill the whole
            // burst, not at the first message the rate lets through: a flood stays one episode.
            if bucket.tokens >= self.burst {
                bucket.shedding = false;
            }
            bucket.tokens -= cost;
            Verdict::Admit
        } else if bucket.shedding {
            Verdict::Shed
        } else {
            bucket.shedding = true;
            Verdict::ShedFirst
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_burst_passes_then_the_rate_holds_and_each_device_has_its_own_bucket() {
        let limiter = DeviceLimiter::new(100, 200).unwrap();
        let t0 = Instant::now();
        let verdicts: Vec<Verdict> = (0..203).map(|_| limiter.admit("a", 1, t0)).collect();
        assert!(verdicts[..200].iter().all(|v| *v == Verdict::Admit));
        assert_eq!(
            verdicts[200..],
            [Verdict::ShedFirst, Verdict::Shed, Verdict::Shed]
        );
        assert_eq!(limiter.admit("b", 1, t0), Verdict::Admit);

        // 100 ms later: 10 points' worth again, and the flood is still the same episode.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(limiter.admit("a", 10, t1), Verdict::Admit);
        assert_eq!(limiter.admit("a", 1, t1), Verdict::Shed);
        // A frame costs its points: too big for what has refilled, it is shed whole.
        let t2 = t1 + Duration::from_millis(50);
        assert_eq!(limiter.admit("a", 6, t2), Verdict::Shed);
        assert_eq!(limiter.admit("a", 5, t2), Verdict::Admit);
        // Quiet long enough to refill the burst: the episode is over, a new flood is a new one.
        let t3 = t2 + Duration::from_secs(3);
        assert_eq!(limiter.admit("a", 200, t3), Verdict::Admit);
        assert_eq!(limiter.admit("a", 1, t3), Verdict::ShedFirst);
    }

    #[test]
    fn zero_means_no_limit_and_idle_buckets_are_forgotten() {
        assert!(DeviceLimiter::new(0, 100).is_none());
        let limiter = DeviceLimiter::new(10, 10).unwrap();
        let t0 = Instant::now();
        for i in 0..SWEEP_AT {
            limiter.admit(&format!("d{i}"), 1, t0);
        }
        // Two seconds on, every bucket is full again: the sweep forgets them all but the new one.
        limiter.admit("late", 1, t0 + Duration::from_secs(2));
        assert_eq!(limiter.state.lock().unwrap().buckets.len(), 1);
    }
}
