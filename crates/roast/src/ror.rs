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

/// Pushes between two exact recomputations of the running sums: bounds both their rounding
/// drift and the size of the times they hold.
const REBUILD_EVERY: u32 = 256;

/// A sliding-window RoR of one session's BT.
///
/// The regression's sums are kept running (added as a reading enters the window, subtracted as
/// it leaves), so a value costs the same whatever the sampling rate: analytics and the detector
/// ask for one at every reading, and at 10 readings a second a 30 s window recomputed each time
/// was most of analytics' CPU under load. Times are held relative to `base`, moved to the
/// window's start at every exact recomputation, so the sums stay small.
#[derive(Debug, Clone, Default)]
pub struct Ror {
    window: VecDeque<(i64, f64)>,
    base: i64,
    sx: f64,
    sxx: f64,
    sy: f64,
    sxy: f64,
    pushes: u32,
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
        self.add(ts_ms, bt, 1.0);
        while let Some(&(t, old)) = self.window.front() {
            if t >= ts_ms - ROR_WINDOW_MS {
                break;
            }
            self.window.pop_front();
            self.add(t, old, -1.0);
        }
        self.pushes += 1;
        // The first reading, or the first after a gap: the base moves to it.
        if self.pushes >= REBUILD_EVERY || self.window.len() == 1 {
            self.rebuild();
        }
    }

    fn add(&mut self, ts_ms: i64, bt: f64, sign: f64) {
        let x = (ts_ms - self.base) as f64;
        self.sx += sign * x;
        self.sxx += sign * x * x;
        self.sy += sign * bt;
        self.sxy += sign * x * bt;
    }

    fn rebuild(&mut self) {
        self.base = self.window.front().map_or(0, |&(t, _)| t);
        (self.sx, self.sxx, self.sy, self.sxy, self.pushes) = (0.0, 0.0, 0.0, 0.0, 0);
        for i in 0..self.window.len() {
            let (t, bt) = self.window[i];
            self.add(t, bt, 1.0);
        }
    }

    /// The RoR at the newest reading, °C/min; `None` until the window holds enough readings.
    pub fn value(&self) -> Option<f64> {
        let (&(first, _), &(last, _)) = (self.window.front()?, self.window.back()?);
        if self.window.len() < MIN_READINGS || last - first < MIN_SPAN_MS {
            return None;
        }
        let n = self.window.len() as f64;
        let sxx = self.sxx - self.sx * self.sx / n;
        let sxy = self.sxy - self.sx * self.sy / n;
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

    /// The running sums give what a fit of the window from scratch gives, over an hour of
    /// readings at 10 a second (rebuilt every 256 pushes, so drift cannot build up).
    #[test]
    fn running_sums_match_a_fit_from_scratch() {
        let mut ror = Ror::new();
        let mut state = 7_u64;
        for i in 0..36_000_i64 {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            let noise = (state >> 40) as f64 / (1u64 << 24) as f64 - 0.5;
            let t = 1_795_448_000_000 + i * 100;
            ror.push(t, 100.0 + (i as f64 / 600.0).sqrt() * 30.0 + noise);
            if i % 997 == 0 && i > 400 {
                let w: Vec<(f64, f64)> = ror
                    .window
                    .iter()
                    .map(|&(t, y)| ((t - ror.window[0].0) as f64, y))
                    .collect();
                let n = w.len() as f64;
                let (mx, my) = (
                    w.iter().map(|p| p.0).sum::<f64>() / n,
                    w.iter().map(|p| p.1).sum::<f64>() / n,
                );
                let sxy: f64 = w.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
                let sxx: f64 = w.iter().map(|p| (p.0 - mx) * (p.0 - mx)).sum();
                let exact = sxy / sxx * 60_000.0;
                let got = ror.value().unwrap();
                assert!((got - exact).abs() < 1e-6, "reading {i}: {got} vs {exact}");
            }
        }
    }
}
