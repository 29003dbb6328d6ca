//! Rate of rise: how fast BT climbs, in °C per minute.
//!
//! Smoothed as the least-squares slope of BT over the last [`ROR_WINDOW_MS`] of readings,
//! rather than the difference of two readings: a probe's noise (0.1–0.3 °C here) divided by a
//! 1 s interval would swing the RoR by ±20 °C/min, while the slope of 30 s of readings moves by
//! well under 1 °C/min. The cost is a lag of half the window (15 s), which is what the loggers
//! roasters know (Artisan's default smoothing) show too. A regression, unlike a difference of
//! the window's ends, does not care how readings are spaced, so gaps and mixed sampling rates
//! need no special case.

use std::collections::VecDeque;

/// The span of readings the RoR is fitted over.
pub const ROR_WINDOW_MS: i64 = 30_000;

/// The least readings, and the least share of the window they must span, before a RoR is
/// given: after a gap (a probe that failed, a device offline) the first readings say nothing.
const MIN_READINGS: usize = 4;
const MIN_SPAN_MS: i64 = ROR_WINDOW_MS / 2;

/// A sliding-window RoR of one session's BT.
#[derive(Debug, Clone, Default)]
pub struct Ror {
    window: VecDeque<(i64, f64)>,
}

impl Ror {
    pub fn new() -> Self {
        Ror::default()
    }

    /// Adds a BT reading; readings must come in time order (older ones are ignored).
    pub fn push(&mut self, ts_ms: i64, bt: f64) {
        if self.window.back().is_some_and(|&(t, _)| ts_ms <= t) {
            return;
        }
        self.window.push_back((ts_ms, bt));
        while self
            .window
            .front()
            .is_some_and(|&(t, _)| t < ts_ms - ROR_WINDOW_MS)
        {
            self.window.pop_front();
        }
    }

    /// The RoR at the newest reading, °C/min; `None` until the window holds enough readings.
    pub fn value(&self) -> Option<f64> {
        let (&(first, _), &(last, _)) = (self.window.front()?, self.window.back()?);
        if self.window.len() < MIN_READINGS || last - first < MIN_SPAN_MS {
            return None;
        }
        // Centred on the window's mean, so the sums stay small and exact enough.
        let n = self.window.len() as f64;
        let mean_t = self
            .window
            .iter()
            .map(|&(t, _)| (t - first) as f64)
            .sum::<f64>()
            / n;
        let mean_bt = self.window.iter().map(|&(_, bt)| bt).sum::<f64>() / n;
        let (mut sxy, mut sxx) = (0.0, 0.0);
        for &(t, bt) in &self.window {
            let dt = (t - first) as f64 - mean_t;
            sxy += dt * (bt - mean_bt);
            sxx += dt * dt;
        }
        // °C per ms to °C per minute.
        (sxx > 0.0).then(|| sxy / sxx * 60_000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_steady_rise_reads_as_its_slope_whatever_the_spacing() {
        for interval in [100, 1000, 1500, 2000] {
            let mut ror = Ror::new();
            // 10 °C/min = 1/6000 °C per ms.
            for i in 0..=(60_000 / interval) {
                let t = i * interval;
                ror.push(t, 150.0 + t as f64 / 6000.0);
            }
            let value = ror.value().unwrap();
            assert!((value - 10.0).abs() < 1e-9, "{interval} ms: {value}");
        }
    }

    #[test]
    fn noise_is_smoothed() {
        let mut ror = Ror::new();
        for i in 0..60_i64 {
            // ±0.3 °C alternating: a difference of neighbours would read ±36 °C/min.
            let noise = if i % 2 == 0 { 0.3 } else { -0.3 };
            ror.push(i * 1000, 150.0 + i as f64 / 6.0 + noise);
        }
        let value = ror.value().unwrap();
        assert!((value - 10.0).abs() < 0.5, "{value}");
    }

    #[test]
    fn nothing_is_said_until_the_window_fills_and_again_after_a_gap() {
        let mut ror = Ror::new();
        for i in 0..10 {
            ror.push(i * 1000, 150.0);
        }
        assert_eq!(ror.value(), None, "10 s of a 30 s window");
        for i in 10..40 {
            ror.push(i * 1000, 150.0);
        }
        assert_eq!(ror.value(), Some(0.0));
        // A minute without readings: the window holds only what came after.
        ror.push(100_000, 160.0);
        ror.push(101_000, 160.2);
        assert_eq!(ror.value(), None);
        // Out of order and repeated readings change nothing.
        ror.push(50_000, 0.0);
        ror.push(101_000, 0.0);
        assert_eq!(ror.window.len(), 2);
    }
}
