//! Where a session's readings come from: the simulation engine (`sim_engine`, one roast
//! per session with its own seed, profile and batch), recorded Artisan roasts (`--replay`), or a
//! synthetic curve (cheapest: for runs where the harness must spend nothing on readings).
//!
//! Whatever the source, a session is a stream of [`Channels`] taken in `seq` order; the
//! publisher decides *when* each is published (sessions run accelerated: at 10,000 points/s
//! over 1000 sessions each session publishes 10 samples a second, whatever its recording's
//! own sample rate) and stamps `ts` at publish. A source that runs out (a roast ends) starts
//! over, so a run of any length has readings: a load test needs realistic values and sizes,
//! not a roast that continues past its drop.

use std::path::Path;
use std::sync::Arc;

use model::Channels;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde::Serialize;
use sim_engine::{RoastConfig, Simulation, builtin_profiles};

use crate::Error;
use crate::alog::{self, RoastLog};

/// Samples of one synthetic roast: 12 minutes at one sample a second.
pub const SYNTHETIC_ROAST_SAMPLES: u64 = 720;

/// The sessions of a run.
#[derive(Debug, Clone)]
pub enum Source {
    /// The simulation engine: session `n` roasts [`engine_roast`]`(seed, n, 0)`, then (if the
    /// run outlasts the roast) the next roast of the same session, and so on.
    Engine { seed: u64 },
    /// [`synthetic_channels`]: a smooth roast curve, shifted per session.
    Synthetic,
    /// Recorded roasts; session `n` replays log `n mod logs`, each session offset and jittered
    /// by its index so that no two are identical.
    Replay(Arc<Vec<RoastLog>>),
}

/// What the report says about the source.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SourceReport {
    pub kind: &'static str,
    pub detail: String,
    /// Recorded logs replayed, by file name.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub logs: Vec<String>,
}

impl Source {
    /// The roast logs at `path` (one `.alog` file or a directory of them).
    pub fn replay(path: &Path) -> Result<Self, Error> {
        Ok(Source::Replay(Arc::new(alog::load(path)?)))
    }

    pub fn report(&self) -> SourceReport {
        match self {
            Source::Engine { seed } => SourceReport {
                kind: "engine",
                detail: format!(
                    "the sim-twin roaster simulation, one roast per session (seed {seed}: profile, batch, moisture and charge temperature vary by session)"
                ),
                logs: Vec::new(),
            },
            Source::Synthetic => SourceReport {
                kind: "synthetic",
                detail: format!(
                    "a smooth 90→210 °C roast curve of {SYNTHETIC_ROAST_SAMPLES} samples, shifted per session"
                ),
                logs: Vec::new(),
            },
            Source::Replay(logs) => SourceReport {
                kind: "replay",
                detail: format!(
                    "{} recorded Artisan roasts ({} samples), cycled over the sessions; each session starts at its own offset with its own temperature shift and noise",
                    logs.len(),
                    logs.iter().map(|l| l.samples.len()).sum::<usize>()
                ),
                logs: logs.iter().map(|l| l.name.clone()).collect(),
            },
        }
    }

    /// The stream of readings of session `n`.
    pub fn session(&self, n: u32) -> Result<SessionCurve, Error> {
        Ok(match self {
            Source::Engine { seed } => {
                let config = engine_roast(*seed, n, 0);
                let mut metadata = serde_json::Map::new();
                metadata.insert("profile".into(), config.profile.name.clone().into());
                metadata.insert("batch_g".into(), config.batch_g.into());
                metadata.insert("sim_seed".into(), config.seed.into());
                // As sim-publisher's roasters do: analytics compares each with its profile's
                // reference and predicts it live, so a load run loads that path too.
                metadata.insert(
                    "reference".into(),
                    format!("sim-twin:{}", config.profile.name).into(),
                );
                SessionCurve {
                    kind: Curve::Engine {
                        simulation: Box::new(simulation(&config)?),
                        seed: *seed,
                        n,
                        round: 0,
                    },
                    metadata,
                }
            }
            Source::Synthetic => SessionCurve {
                kind: Curve::Synthetic { n, next: 0 },
                metadata: serde_json::Map::new(),
            },
            Source::Replay(logs) => {
                let count = logs.len().max(1) as u32;
                let log_index = (n % count) as usize;
                let round = n / count;
                let len = logs.get(log_index).map_or(1, |l| l.samples.len().max(1));
                // Sessions replaying the same log start 37 samples apart (a prime, so that they
                // spread over the whole roast), and each is shifted by up to ±2 °C.
                let start = (round as usize * 37) % len;
                let mut rng = StdRng::seed_from_u64(u64::from(n));
                let shift = f64::from(rng.random_range(-20i32..=20)) / 10.0;
                let mut metadata = serde_json::Map::new();
                if let Some(log) = logs.get(log_index) {
                    metadata.insert("replay".into(), log.name.clone().into());
                }
                SessionCurve {
                    kind: Curve::Replay {
                        logs: logs.clone(),
                        log_index,
                        pos: start,
                        shift,
                        rng,
                    },
                    metadata,
                }
            }
        })
    }
}

/// Roast `round` of session `n`: its own seed, and a profile, batch, moisture and charge
/// temperature drawn from it (within what the engine accepts), so that the fleet's sessions
/// differ as a shop's roasts do.
pub fn engine_roast(seed: u64, n: u32, round: u64) -> RoastConfig {
    let roast_seed = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(u64::from(n) << 16)
        .wrapping_add(round);
    let mut rng = StdRng::seed_from_u64(roast_seed);
    let profiles = builtin_profiles();
    let profile = profiles[rng.random_range(0..profiles.len())].clone();
    let tenths =
        |rng: &mut StdRng, lo: f64, hi: f64| (rng.random_range(lo..=hi) * 10.0).round() / 10.0;
    RoastConfig {
        profile,
        seed: roast_seed,
        batch_g: (rng.random_range(2500.0..=4800.0_f64) / 10.0).round() * 10.0,
        moisture_pct: tenths(&mut rng, 9.5, 12.0),
        charge_et_c: tenths(&mut rng, 190.0, 215.0),
        ambient_c: tenths(&mut rng, 15.0, 28.0),
        sample_interval_ms: 1000,
        // Load sessions start at charge, as before (the event score has its pre-charge roasts).
        pre_charge_ms: 0,
    }
}

fn simulation(config: &RoastConfig) -> Result<Simulation, Error> {
    Simulation::new(config).map_err(|e| Error::Config(format!("simulation engine: {e}")))
}

/// One session's readings, taken in `seq` order.
#[derive(Debug)]
pub struct SessionCurve {
    kind: Curve,
    /// Extra fields for the session's start message (which log it replays, …).
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "one per session, a few hundred bytes: boxing would only add noise"
)]
enum Curve {
    Engine {
        simulation: Box<Simulation>,
        seed: u64,
        n: u32,
        round: u64,
    },
    Synthetic {
        n: u32,
        next: u64,
    },
    Replay {
        logs: Arc<Vec<RoastLog>>,
        log_index: usize,
        pos: usize,
        shift: f64,
        rng: StdRng,
    },
}

impl SessionCurve {
    /// The readings of the next point of this session.
    pub fn next_channels(&mut self) -> Channels {
        match &mut self.kind {
            Curve::Engine {
                simulation,
                seed,
                n,
                round,
            } => {
                // After the drop, the session's next roast. The engine refuses no roast that
                // `engine_roast` makes; should it ever, the run goes on with the last roast.
                let sample = match simulation.next_sample() {
                    Some(s) => Some(s),
                    None => {
                        *round += 1;
                        if let Ok(next) = Simulation::new(&engine_roast(*seed, *n, *round)) {
                            **simulation = next;
                        }
                        simulation.next_sample()
                    }
                };
                match sample {
                    Some(s) => Channels {
                        bt: Some(s.bt),
                        et: Some(s.et),
                        gas: Some(s.gas),
                        air: Some(s.air),
                        drum: Some(s.drum),
                        extra: [("ror".to_owned(), s.ror)].into(),
                    },
                    None => synthetic_channels(1.0, *n),
                }
            }
            Curve::Synthetic { n, next } => {
                let i = *next % SYNTHETIC_ROAST_SAMPLES;
                *next += 1;
                synthetic_channels(i as f64 / (SYNTHETIC_ROAST_SAMPLES - 1) as f64, *n)
            }
            Curve::Replay {
                logs,
                log_index,
                pos,
                shift,
                rng,
            } => {
                let Some(log) = logs.get(*log_index).filter(|l| !l.samples.is_empty()) else {
                    return synthetic_channels(0.0, 0);
                };
                let s = log.samples[*pos % log.samples.len()];
                *pos = (*pos + 1) % log.samples.len();
                let mut temp = |v: Option<f64>| {
                    v.map(|t| {
                        let noise = f64::from(rng.random_range(-10i32..=10)) / 100.0;
                        ((t + *shift + noise) * 100.0).round() / 100.0
                    })
                };
                Channels {
                    bt: temp(s.bt),
                    et: temp(s.et),
                    gas: s.gas,
                    air: s.air,
                    drum: s.drum,
                    extra: Default::default(),
                }
            }
        }
    }
}

/// Plausible readings for a point `progress` (0..=1) of the way through its session: bean
/// temperature rising 90→210 °C with the flattening curve of a real roast, the environment
/// above it, gas tapering off, air opening up. `device` shifts each device's curve a little so
/// that sessions are not identical.
pub fn synthetic_channels(progress: f64, device: u32) -> Channels {
    let p = progress.clamp(0.0, 1.0);
    let offset = f64::from(device % 7) * 0.5 - 1.5;
    let wobble = (p * 40.0 + f64::from(device)).sin();
    let round = |v: f64| (v * 10.0).round() / 10.0;
    let bt = 90.0 + 120.0 * (1.0 - (1.0 - p).powf(1.6));
    Channels {
        bt: Some(round(bt + offset)),
        et: Some(round(bt + 45.0 - 20.0 * p + offset + wobble * 0.8)),
        gas: Some(round(75.0 - 35.0 * p + wobble * 2.0)),
        air: Some(round(30.0 + 45.0 * p)),
        drum: Some(62.0),
        extra: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alog::LogSample;

    #[test]
    fn bean_temperature_rises_smoothly_from_90_to_210() {
        let bt = |p| synthetic_channels(p, 3).bt.unwrap();
        assert!((bt(0.0) - 90.0).abs() < 2.0);
        assert!((bt(1.0) - 210.0).abs() < 2.0);
        let mut last = f64::MIN;
        for i in 0..=100 {
            let v = bt(f64::from(i) / 100.0);
            assert!(v >= last, "bt falls at {i}%");
            assert!(v - last < 5.0 || last == f64::MIN, "bt jumps at {i}%");
            last = v;
        }
        let c = synthetic_channels(0.5, 1);
        assert!(c.et.unwrap() > c.bt.unwrap());
        assert_eq!(c.len(), 5);
    }

    #[test]
    fn a_synthetic_session_repeats_its_roast() {
        let mut s = Source::Synthetic.session(4).unwrap();
        let first: Vec<_> = (0..SYNTHETIC_ROAST_SAMPLES)
            .map(|_| s.next_channels())
            .collect();
        assert!(first[0].bt < first[first.len() - 1].bt);
        assert_eq!(s.next_channels(), first[0]);
    }

    fn log(name: &str, bts: &[f64]) -> RoastLog {
        RoastLog {
            name: name.into(),
            samples: bts
                .iter()
                .enumerate()
                .map(|(i, &bt)| LogSample {
                    t_s: i as f64,
                    bt: Some(bt),
                    et: None,
                    gas: Some(50.0),
                    air: None,
                    drum: None,
                })
                .collect(),
            marks: Vec::new(),
            weight_in_g: None,
            weight_out_g: None,
        }
    }

    #[test]
    fn replayed_sessions_cycle_over_the_logs_and_differ() {
        let bts: Vec<f64> = (0..100).map(|i| 100.0 + f64::from(i)).collect();
        let source = Source::Replay(Arc::new(vec![log("a", &bts), log("b", &bts)]));
        let mut s0 = source.session(0).unwrap();
        let mut s2 = source.session(2).unwrap();
        assert_eq!(s0.metadata["replay"], "a");
        assert_eq!(source.session(1).unwrap().metadata["replay"], "b");
        assert_eq!(s2.metadata["replay"], "a");
        let a: Vec<f64> = (0..100).map(|_| s0.next_channels().bt.unwrap()).collect();
        let b: Vec<f64> = (0..100).map(|_| s2.next_channels().bt.unwrap()).collect();
        // Session 0 replays from the start, within shift and noise of the recording.
        assert!((a[0] - 100.0).abs() <= 2.1, "{}", a[0]);
        // Session 2 replays the same log from another offset.
        assert!((b[0] - 137.0).abs() <= 2.1, "{}", b[0]);
        assert_ne!(a, b);
        // Controls and missing channels are replayed as recorded.
        let c = s0.next_channels();
        assert_eq!((c.gas, c.et), (Some(50.0), None));
        // After the end, the roast starts over.
        assert!((c.bt.unwrap() - 100.0).abs() <= 2.1);
    }

    #[test]
    fn engine_sessions_are_whole_roasts_that_differ_and_repeat_exactly() {
        let source = Source::Engine { seed: 7 };
        let mut a = source.session(0).unwrap();
        let first: Vec<Channels> = (0..2000).map(|_| a.next_channels()).collect();
        // The session's first roast, sample for sample, up to its drop; then its next roast.
        let roast = |round| {
            sim_engine::simulate(&engine_roast(7, 0, round))
                .unwrap()
                .samples
        };
        let (first_roast, second_roast) = (roast(0), roast(1));
        let len = first_roast.len();
        assert!(len > 300, "a roast lasts minutes of samples: {len}");
        for (i, sample) in first_roast.iter().enumerate() {
            assert_eq!(first[i].bt, Some(sample.bt), "sample {i}");
        }
        assert!(first_roast[len - 1].bt > 190.0);
        assert_eq!(first[len].bt, Some(second_roast[0].bt));
        assert_eq!(first[len + 1].et, Some(second_roast[1].et));
        assert!(first[10].extra.contains_key("ror"));
        assert_eq!(first[10].len(), 6);
        // Another session: another roast. The same session again: the same roast.
        let mut b = source.session(1).unwrap();
        let other: Vec<Channels> = (0..50).map(|_| b.next_channels()).collect();
        assert_ne!(other, first[..50]);
        let mut again = source.session(0).unwrap();
        let same: Vec<Channels> = (0..50).map(|_| again.next_channels()).collect();
        assert_eq!(same, first[..50]);
        assert!(a.metadata.contains_key("profile"));
        // Every session's roast is one the engine accepts.
        for n in 0..200 {
            engine_roast(7, n, u64::from(n % 3)).validate().unwrap();
        }
    }
}
