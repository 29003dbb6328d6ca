//! A deterministic simulation of a 5 kg-class drum roaster: the roasts the rest of the platform
//! is developed, tested and load-tested against. A lumped heat-transfer model (burner, airflow,
//! drum speed, batch, moisture; BT, ET and rate of rise as the probes read them) roasts a
//! [`Profile`] of control steps and knows when its own events happen (charge, turning point, dry
//! end, first crack, drop), so inferred events can be scored against ground truth.
//!
//! Used by sim-twin (whole roasts over HTTP), sim-publisher (simulated roasters publishing over
//! MQTT), the load harness and the benchmarks — each depends on this crate, not on a service.
//!
//! Not here: a clock, I/O, async, or anything about MQTT and HTTP — the engine is pure, so the
//! same [`RoastConfig`] always gives the same bytes. The model is plausible, not predictive: it
//! is calibrated to look like real roasts, not to stand in for a particular machine.
//!
//! ## A roast, sampled the way a roaster's logger samples it
//!
//! ```text
//! RoastConfig ─▶ Simulation::new ─▶ next_sample() … next_sample() ─▶ None   (after the drop)
//!   profile (control steps),          one Sample per sample interval; the
//!   seed, batch, moisture,            drop sample is the last
//!   charge ET, ambient,               events(): charge, turning point, dry end,
//!   pre-charge logging                first crack, drop — ground truth
//! ```
//!
//! Samples and events share one clock, `t_ms` since the logger started. A real logger records
//! the preheated, empty drum for a while before the beans go in; with
//! [`RoastConfig::pre_charge_ms`] the simulation does too: until charge, at `pre_charge_ms`, the
//! drum idles at the charge ET (with the burner controller's slow, small swing), BT reads the hot
//! air flat at its charge value, RoR is 0 and the controls are the profile's first step; at
//! charge BT breaks downward — the break an event detector finds CHARGE by. With
//! `pre_charge_ms` 0 (the default) the first sample is the charge instant. The roast after
//! charge is the same either way, shifted by `pre_charge_ms` — the idle drum draws its noise
//! from a stream of its own — except for the RoR of its first [`ROR_WINDOW_MS`], which a logger
//! takes over the flat BT before charge rather than over the few seconds since (so it does not
//! leap from 0 to −250 °C/min at charge).
//!
//! The physics (see `physics`) is integrated in fixed [`STEP_MS`] steps whatever the sample
//! interval, so a roast sampled every 500 ms and every 2 s is the same roast with the same events.
//! Everything random — small batch-to-batch differences and sensor noise — comes from the seed
//! through ChaCha8, whose stream is specified and portable, and the model uses only IEEE-exact
//! arithmetic (no `exp`, `ln` or trigonometry, whose results may differ between platforms), so a
//! seed replays byte for byte everywhere.

mod physics;
mod profiles;
mod rng;

use serde::{Deserialize, Serialize};

pub use profiles::{builtin_profile, builtin_profiles};

use physics::{Model, Readings};
use rng::Rng;

/// The capacity of the simulated roaster. Batches of 60–100 % of it roast within the ranges the
/// built-in profiles are calibrated for; smaller and larger ones (down to 10 %, up to 120 %)
/// simulate, but roast faster or slower than those profiles intend, as on a real roaster.
pub const NOMINAL_BATCH_G: f64 = 5000.0;

/// The integration step. Fixed, so the roast does not depend on how it is sampled.
pub const STEP_MS: u64 = 100;

/// The window of the rate of rise: BT now minus BT this long ago, per minute.
pub const ROR_WINDOW_MS: u64 = 30_000;

/// Bounds of the inputs (see [`RoastConfig::validate`] and [`Profile::validate`]).
pub const MIN_SAMPLE_INTERVAL_MS: u64 = 100;
pub const MAX_SAMPLE_INTERVAL_MS: u64 = 60_000;
/// Ten minutes: longer than any logger is left recording an empty drum before a charge.
pub const MAX_PRE_CHARGE_MS: u64 = 600_000;
pub const MAX_DURATION_S: f64 = 3600.0;
pub const MAX_PROFILE_STEPS: usize = 1000;

/// The controls from `at_s` seconds after charge until the next step, each in % of its range.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlStep {
    pub at_s: f64,
    /// Burner output.
    pub gas: f64,
    /// Exhaust fan (airflow through the drum).
    pub air: f64,
    /// Drum speed.
    pub drum: f64,
}

/// A roast recipe: how the operator drives the controls, and when to drop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub name: String,
    /// Sorted by `at_s`, the first at 0 (charge).
    pub steps: Vec<ControlStep>,
    /// The beans are dropped when BT reaches this, after the turning point.
    pub drop_bt_c: f64,
    /// The beans are dropped at this time at the latest (a safety stop: a profile with too
    /// little heat would otherwise never reach its drop temperature).
    pub max_duration_s: f64,
}

impl Profile {
    /// Checks the profile, naming what is wrong.
    pub fn validate(&self) -> Result<(), SimError> {
        let name = self.name.trim();
        if name.is_empty() || self.name.chars().count() > 64 {
            return Err(invalid("profile name must be 1-64 characters"));
        }
        if self.steps.is_empty() || self.steps.len() > MAX_PROFILE_STEPS {
            return Err(invalid(format!(
                "profile {name:?} must have 1-{MAX_PROFILE_STEPS} steps, has {}",
                self.steps.len()
            )));
        }
        for (i, step) in self.steps.iter().enumerate() {
            if !step.at_s.is_finite() || step.at_s < 0.0 {
                return Err(invalid(format!(
                    "profile {name:?} step {i}: at_s must be a non-negative number of seconds"
                )));
            }
            for (what, value) in [("gas", step.gas), ("air", step.air), ("drum", step.drum)] {
                if !(0.0..=100.0).contains(&value) {
                    return Err(invalid(format!(
                        "profile {name:?} step {i}: {what} {value} is not within 0..=100 %"
                    )));
                }
            }
        }
        if self.steps[0].at_s != 0.0 {
            return Err(invalid(format!(
                "profile {name:?}: the first step must be at_s 0 (the controls at charge)"
            )));
        }
        if let Some(i) = self.steps.windows(2).position(|w| w[1].at_s <= w[0].at_s) {
            return Err(invalid(format!(
                "profile {name:?}: steps must be in increasing at_s order (step {} is not after step {i})",
                i + 1
            )));
        }
        if !(100.0..=250.0).contains(&self.drop_bt_c) {
            return Err(invalid(format!(
                "profile {name:?}: drop_bt_c {} is not within 100..=250 °C",
                self.drop_bt_c
            )));
        }
        if !(self.max_duration_s > 0.0 && self.max_duration_s <= MAX_DURATION_S) {
            return Err(invalid(format!(
                "profile {name:?}: max_duration_s {} is not within (0, {MAX_DURATION_S}] s",
                self.max_duration_s
            )));
        }
        Ok(())
    }

    /// The controls in effect `t_ms` after charge.
    pub fn controls_at(&self, t_ms: u64) -> ControlStep {
        let t_s = t_ms as f64 / 1000.0;
        let i = self.steps.partition_point(|s| s.at_s <= t_s);
        self.steps[i.saturating_sub(1)]
    }
}

/// One roast to simulate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoastConfig {
    pub profile: Profile,
    /// Decides the batch-to-batch variation and the sensor noise; nothing else is random.
    pub seed: u64,
    /// Green coffee charged, grams.
    pub batch_g: f64,
    /// Water content of the green coffee, % of its weight.
    pub moisture_pct: f64,
    /// ET when the beans are charged (the preheated, empty drum), °C.
    pub charge_et_c: f64,
    /// Room temperature: of the green beans and of the air the fan draws in, °C.
    pub ambient_c: f64,
    pub sample_interval_ms: u64,
    /// How long the logger records the preheated, empty drum before the beans are charged, ms:
    /// charge is at `t_ms` = `pre_charge_ms`. 0 (the default): logging starts at charge.
    #[serde(default)]
    pub pre_charge_ms: u64,
}

impl Default for RoastConfig {
    /// The `medium` profile with 4 kg of green coffee at 10.5 % moisture — 80 % of the
    /// roaster's nominal 5 kg, how shop roasters of that class are usually loaded — charged at
    /// 200 °C ET in a 20 °C room, sampled once a second from the charge on.
    fn default() -> Self {
        RoastConfig {
            profile: builtin_profile("medium").unwrap_or_else(|| builtin_profiles().remove(0)),
            seed: 0,
            batch_g: 4000.0,
            moisture_pct: 10.5,
            charge_et_c: 200.0,
            ambient_c: 20.0,
            sample_interval_ms: 1000,
            pre_charge_ms: 0,
        }
    }
}

impl RoastConfig {
    /// Checks the configuration and its profile, naming what is wrong.
    pub fn validate(&self) -> Result<(), SimError> {
        self.profile.validate()?;
        let checks: [(&str, f64, f64, f64, &str); 4] = [
            (
                "batch_g",
                self.batch_g,
                0.1 * NOMINAL_BATCH_G,
                1.2 * NOMINAL_BATCH_G,
                "g (10-120 % of the simulated roaster's 5 kg)",
            ),
            ("moisture_pct", self.moisture_pct, 5.0, 20.0, "%"),
            ("charge_et_c", self.charge_et_c, 120.0, 280.0, "°C"),
            ("ambient_c", self.ambient_c, -10.0, 45.0, "°C"),
        ];
        for (name, value, min, max, unit) in checks {
            // NaN fails `contains` too.
            if !(min..=max).contains(&value) {
                return Err(invalid(format!(
                    "{name} {value} is not within {min}..={max} {unit}"
                )));
            }
        }
        if !(MIN_SAMPLE_INTERVAL_MS..=MAX_SAMPLE_INTERVAL_MS).contains(&self.sample_interval_ms) {
            return Err(invalid(format!(
                "sample_interval_ms {} is not within {MIN_SAMPLE_INTERVAL_MS}..={MAX_SAMPLE_INTERVAL_MS}",
                self.sample_interval_ms
            )));
        }
        if self.pre_charge_ms > MAX_PRE_CHARGE_MS {
            return Err(invalid(format!(
                "pre_charge_ms {} is not within 0..={MAX_PRE_CHARGE_MS}",
                self.pre_charge_ms
            )));
        }
        Ok(())
    }

    /// The most samples this roast can produce (when it runs to `max_duration_s`, logged from
    /// `pre_charge_ms` before charge): what callers bound their work by before simulating.
    pub fn max_samples(&self) -> u64 {
        let duration_ms = (self.profile.max_duration_s.max(0.0) * 1000.0).ceil() as u64;
        // The drop comes at an integration step: up to a step after `max_duration_s`.
        let drop_ms = duration_ms.div_ceil(STEP_MS) * STEP_MS;
        // The grid samples before the drop, plus the drop sample.
        (self.pre_charge_ms + drop_ms) / self.sample_interval_ms.max(1) + 2
    }
}

/// What the logger records at one moment of the roast. Temperatures in °C, `ror` in °C/min,
/// controls in % of range; rounded to 0.01.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Since logging started (= charge when `pre_charge_ms` is 0).
    pub t_ms: u64,
    /// Bean temperature as the probe reads it (with its lag and noise).
    pub bt: f64,
    /// Environment (drum air) temperature as its probe reads it.
    pub et: f64,
    /// Rate of rise of BT over the last [`ROR_WINDOW_MS`] (or what has been logged, while that
    /// is shorter), from the probe before noise: the smoothed RoR a logger shows. 0 before
    /// charge, where BT is flat.
    pub ror: f64,
    pub gas: f64,
    pub air: f64,
    pub drum: f64,
}

/// The landmarks of a roast, in the order they happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The beans go in (at `pre_charge_ms`; t = 0 without a pre-charge segment).
    Charge,
    /// BT's minimum after charge, where the probe stops cooling and starts following the beans.
    TurningPoint,
    /// The beans have dried and start to yellow.
    DryEnd,
    /// The beans start to crack audibly.
    FirstCrack,
    /// The beans leave the drum: the end of the roast.
    Drop,
}

impl From<EventKind> for roast::EventKind {
    /// The platform's name for the engine's event (the engine knows one first crack, its start).
    fn from(kind: EventKind) -> Self {
        match kind {
            EventKind::Charge => roast::EventKind::Charge,
            EventKind::TurningPoint => roast::EventKind::TurningPoint,
            EventKind::DryEnd => roast::EventKind::DryEnd,
            EventKind::FirstCrack => roast::EventKind::FcStart,
            EventKind::Drop => roast::EventKind::Drop,
        }
    }
}

/// When an event happened, and what BT and ET read then (noise-free, rounded to 0.01).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventKind,
    /// On the samples' clock: since logging started (= charge when `pre_charge_ms` is 0).
    pub t_ms: u64,
    pub bt: f64,
    pub et: f64,
}

/// A whole roast.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Roast {
    pub samples: Vec<Sample>,
    pub events: Vec<Event>,
}

/// Why a roast could not be simulated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    /// An input is out of range or inconsistent; the message names it.
    #[error("{0}")]
    Invalid(String),
}

fn invalid(message: impl Into<String>) -> SimError {
    SimError::Invalid(message.into())
}

/// A roast in progress, sampled one [`Sample`] at a time.
#[derive(Debug, Clone)]
pub struct Simulation {
    profile: Profile,
    interval_ms: u64,
    /// Charge on the samples' clock; the integration (`step`, `drop_ms`) counts from charge.
    pre_charge_ms: u64,
    /// The empty drum before charge.
    idle: Idle,
    model: Model,
    /// Sensor noise; a stream of its own, so sampling more or less often cannot change the
    /// batch-to-batch variation drawn at the start.
    noise: Rng,
    /// Integration steps taken.
    step: u64,
    /// The readings at the previous and at the current step, to interpolate samples between.
    prev: Readings,
    current: Readings,
    /// The noise-free BT of the last `ROR_WINDOW_MS`, one per step (a ring).
    bt_window: Vec<f64>,
    ror: f64,
    prev_ror: f64,
    /// On the samples' clock.
    next_sample_ms: u64,
    /// Since charge.
    drop_ms: Option<u64>,
    turned: bool,
    dried: bool,
    cracked: bool,
    finished: bool,
    /// On the samples' clock.
    events: Vec<Event>,
    /// Events up to the last sample; later ones (at most one step ahead) are not shown yet.
    visible: usize,
    /// Settings given by [`Simulation::set_control`], in place of the profile's from then on:
    /// a driven simulation (driver-bridge's `sim` driver) obeys commands. All `None` — the
    /// profile alone — keeps a roast identical to one simulated without them.
    overrides: Overrides,
}

/// A control a driven simulation can be told to change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Control {
    Gas,
    Air,
    Drum,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Overrides {
    gas: Option<f64>,
    air: Option<f64>,
    drum: Option<f64>,
}

impl Overrides {
    fn apply(&self, mut step: ControlStep) -> ControlStep {
        step.gas = self.gas.unwrap_or(step.gas);
        step.air = self.air.unwrap_or(step.air);
        step.drum = self.drum.unwrap_or(step.drum);
        step
    }
}

const WINDOW_STEPS: usize = (ROR_WINDOW_MS / STEP_MS) as usize;

/// The preheated, empty drum the logger records before charge: the probes read what they read
/// at the charge instant, so that the fall of BT at charge is the only break in the curve.
#[derive(Debug, Clone)]
struct Idle {
    /// The probes' readings at charge, before noise.
    at_charge: Readings,
    /// The burner controller holding the empty drum at the charge ET swings it slowly: a
    /// triangle wave of this amplitude (°C) and period, at zero at the charge instant.
    swing_c: f64,
    swing_period_ms: u64,
    /// Its own stream, so a roast after charge is the same with and without a pre-charge
    /// segment (and a roast without one is the same as before there were any).
    rng: Rng,
}

impl Idle {
    fn new(seed: u64, at_charge: Readings) -> Self {
        let mut rng = Rng::new(seed, rng::PRE_CHARGE_STREAM);
        let swing_c = 1.25 + 0.75 * rng.symmetric();
        // 40-80 s, in whole steps.
        let swing_period_ms = (600.0 + 200.0 * rng.symmetric()).round() as u64 * STEP_MS;
        Idle {
            at_charge,
            swing_c,
            swing_period_ms,
            rng,
        }
    }

    /// What the logger records `before_ms` before charge (> 0), under the controls at charge.
    fn sample(&mut self, t_ms: u64, before_ms: u64, controls: ControlStep) -> Sample {
        let phase = (before_ms % self.swing_period_ms) as f64 / self.swing_period_ms as f64;
        let wave = if phase < 0.25 {
            4.0 * phase
        } else if phase < 0.75 {
            2.0 - 4.0 * phase
        } else {
            4.0 * phase - 4.0
        };
        Sample {
            t_ms,
            // The bean probe sits in the drum's hot air, whose swing its 36 s lag smooths away.
            bt: round2(self.at_charge.bt + self.rng.sensor(physics::BT_NOISE_C)),
            et: round2(
                self.at_charge.et + self.swing_c * wave + self.rng.sensor(physics::ET_NOISE_C),
            ),
            // BT is flat: nothing rises.
            ror: 0.0,
            gas: round2(controls.gas),
            air: round2(controls.air),
            drum: round2(controls.drum),
        }
    }
}

impl Simulation {
    /// Starts logging a roast: the beans are charged at t = `pre_charge_ms` (0 by default).
    pub fn new(config: &RoastConfig) -> Result<Self, SimError> {
        config.validate()?;
        let mut variation = Rng::new(config.seed, rng::VARIATION_STREAM);
        let model = Model::new(config, &mut variation);
        let current = model.readings();
        let bt_window = vec![current.bt; WINDOW_STEPS + 1];
        let charge = Event {
            kind: EventKind::Charge,
            t_ms: config.pre_charge_ms,
            bt: round2(current.bt),
            et: round2(current.et),
        };
        Ok(Simulation {
            profile: config.profile.clone(),
            interval_ms: config.sample_interval_ms,
            pre_charge_ms: config.pre_charge_ms,
            idle: Idle::new(config.seed, current),
            model,
            noise: Rng::new(config.seed, rng::NOISE_STREAM),
            step: 0,
            prev: current,
            current,
            bt_window,
            ror: 0.0,
            prev_ror: 0.0,
            next_sample_ms: 0,
            drop_ms: None,
            turned: false,
            dried: false,
            cracked: false,
            finished: false,
            events: vec![charge],
            visible: 0,
            overrides: Overrides::default(),
        })
    }

    /// The next sample, one sample interval after the previous one (interpolated between the
    /// two integration steps around it when the interval is not a multiple of [`STEP_MS`]); the
    /// drop is sampled at the moment it happens, which may fall between two intervals, and is
    /// the last sample. `None` after the drop.
    pub fn next_sample(&mut self) -> Option<Sample> {
        if self.finished {
            return None;
        }
        let logged = self.next_sample_ms;
        if logged < self.pre_charge_ms {
            self.next_sample_ms = logged + self.interval_ms;
            let controls = self.controls_at(0);
            return Some(
                self.idle
                    .sample(logged, self.pre_charge_ms - logged, controls),
            );
        }
        // Since charge, the integration's clock.
        let target = logged - self.pre_charge_ms;
        while self.t_ms() < target && self.drop_ms.is_none() {
            self.advance();
        }
        let (t_ms, readings, ror) = match self.drop_ms {
            Some(drop_ms) if drop_ms <= target => {
                self.finished = true;
                (drop_ms, self.current, self.ror)
            }
            _ => {
                // `target` lies in (t - STEP_MS, t]: interpolate, so any interval works.
                let w = 1.0 - (self.t_ms() - target) as f64 / STEP_MS as f64;
                let lerp = |a: f64, b: f64| a + (b - a) * w;
                let readings = Readings {
                    bt: lerp(self.prev.bt, self.current.bt),
                    et: lerp(self.prev.et, self.current.et),
                };
                (target, readings, lerp(self.prev_ror, self.ror))
            }
        };
        self.next_sample_ms = logged + self.interval_ms;
        let logged_t_ms = t_ms + self.pre_charge_ms;
        self.visible = if self.finished {
            self.events.len()
        } else {
            self.events.partition_point(|e| e.t_ms <= logged_t_ms)
        };
        let controls = self.controls_at(t_ms);
        Some(Sample {
            t_ms: logged_t_ms,
            bt: round2(readings.bt + self.noise.sensor(physics::BT_NOISE_C)),
            et: round2(readings.et + self.noise.sensor(physics::ET_NOISE_C)),
            ror: round2(ror),
            gas: round2(controls.gas),
            air: round2(controls.air),
            drum: round2(controls.drum),
        })
    }

    /// The events up to the last sample, in the order they happened.
    pub fn events(&self) -> &[Event] {
        &self.events[..self.visible]
    }

    /// The profile being roasted.
    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// Sets `control` to `value` (% of its range, clamped to 0–100) in place of the profile's
    /// setting, from the next integration step to the end of the roast: what an operator's
    /// command does to a real roaster. Deterministic like everything else here: the same seed
    /// and the same overrides at the same samples give the same roast.
    pub fn set_control(&mut self, control: Control, value: f64) {
        let value = if value.is_finite() {
            value.clamp(0.0, 100.0)
        } else {
            return;
        };
        match control {
            Control::Gas => self.overrides.gas = Some(value),
            Control::Air => self.overrides.air = Some(value),
            Control::Drum => self.overrides.drum = Some(value),
        }
    }

    /// The controls in effect `t_ms` after charge: the profile's, overridden where told.
    fn controls_at(&self, t_ms: u64) -> ControlStep {
        self.overrides.apply(self.profile.controls_at(t_ms))
    }

    /// Since charge.
    fn t_ms(&self) -> u64 {
        self.step * STEP_MS
    }

    /// One integration step, and the events it reveals.
    fn advance(&mut self) {
        let controls = self.controls_at(self.t_ms());
        self.model.step(&controls, STEP_MS as f64 / 1000.0);
        self.step += 1;
        self.prev = self.current;
        self.current = self.model.readings();
        self.prev_ror = self.ror;
        self.ror = self.rate_of_rise();
        let t_ms = self.t_ms();

        if !self.turned && self.current.bt > self.prev.bt {
            // The previous step was the minimum.
            self.turned = true;
            let at = t_ms - STEP_MS;
            self.record(EventKind::TurningPoint, at, self.prev);
        }
        let bean_c = self.model.bean_c();
        if !self.dried && bean_c >= self.model.dry_end_c() {
            self.dried = true;
            self.record(EventKind::DryEnd, t_ms, self.current);
        }
        if !self.cracked && bean_c >= self.model.first_crack_c() {
            self.cracked = true;
            self.record(EventKind::FirstCrack, t_ms, self.current);
        }
        let drop = (self.turned && self.current.bt >= self.profile.drop_bt_c)
            || t_ms as f64 >= self.profile.max_duration_s * 1000.0;
        if drop {
            self.drop_ms = Some(t_ms);
            self.record(EventKind::Drop, t_ms, self.current);
        }
    }

    fn rate_of_rise(&mut self) -> f64 {
        let len = self.bt_window.len();
        let slot = (self.step as usize) % len;
        self.bt_window[slot] = self.current.bt;
        if self.step as usize >= WINDOW_STEPS {
            // The oldest entry of the ring is the one after the newest.
            let oldest = self.bt_window[(slot + 1) % len];
            (self.current.bt - oldest) * 60_000.0 / ROR_WINDOW_MS as f64
        } else {
            // Until a whole window has passed since charge: over what has been logged, the idle
            // drum before charge (BT flat at its charge value, the ring's first entry)
            // included — the average since charge when logging started at charge.
            let logged_ms = (self.t_ms() + self.pre_charge_ms).min(ROR_WINDOW_MS);
            (self.current.bt - self.bt_window[0]) * 60_000.0 / logged_ms as f64
        }
    }

    /// Adds an event `t_ms` after charge, in time order (the turning point is recognised one
    /// step late).
    fn record(&mut self, kind: EventKind, t_ms: u64, at: Readings) {
        let t_ms = t_ms + self.pre_charge_ms;
        let event = Event {
            kind,
            t_ms,
            bt: round2(at.bt),
            et: round2(at.et),
        };
        let i = self
            .events
            .partition_point(|e| (e.t_ms, e.kind) <= (t_ms, kind));
        self.events.insert(i, event);
    }
}

/// Simulates a whole roast.
pub fn simulate(config: &RoastConfig) -> Result<Roast, SimError> {
    let mut sim = Simulation::new(config)?;
    let capacity = usize::try_from(config.max_samples().min(100_000)).unwrap_or(0);
    let mut samples = Vec::with_capacity(capacity);
    while let Some(sample) = sim.next_sample() {
        samples.push(sample);
    }
    Ok(Roast {
        samples,
        events: sim.events,
    })
}

/// Rounds to 0.01 — what a logger shows, and what keeps the JSON short. `+ 0.0` turns -0 into 0.
fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0 + 0.0
}
