//! `sim`: a live sim-twin engine in place of a roaster, obeying commands — a gas change shows
//! in the curve from the next integration step on — so the platform's loop closes with no
//! hardware. Roasts run back to back; each new roast follows its profile again until told
//! otherwise (a real operator's setting does not outlive the batch either).

use model::Channels;
use model::command::Control;
use serde_json::{Map, Value};
use sim_engine::{RoastConfig, Simulation, builtin_profile, builtin_profiles};

use super::{Driver, DriverError, Reading};
use crate::config::SimSettings;

pub fn validate(s: &SimSettings, sample_interval_ms: u64) -> Result<(), String> {
    if builtin_profile(&s.profile).is_none() {
        let names: Vec<String> = builtin_profiles().into_iter().map(|p| p.name).collect();
        return Err(format!(
            "profile {:?}: expected one of {}",
            s.profile,
            names.join(", ")
        ));
    }
    if !(s.acceleration > 0.0 && s.acceleration <= 600.0) {
        return Err("acceleration must be in (0, 600]".into());
    }
    let interval = sim_interval_ms(s, sample_interval_ms);
    if !(sim_engine::MIN_SAMPLE_INTERVAL_MS..=sim_engine::MAX_SAMPLE_INTERVAL_MS)
        .contains(&interval)
    {
        return Err(format!(
            "sample_interval_ms × acceleration = {interval} ms of roast per sample; the engine takes {}..={}",
            sim_engine::MIN_SAMPLE_INTERVAL_MS,
            sim_engine::MAX_SAMPLE_INTERVAL_MS
        ));
    }
    let max_pre = sim_engine::MAX_PRE_CHARGE_MS as f64 / 1000.0;
    if !(0.0..=max_pre).contains(&s.pre_charge_secs) {
        return Err(format!("pre_charge_secs must be within 0..={max_pre}"));
    }
    if let Some(b) = s.batch_g
        && !(b > 0.0 && b.is_finite())
    {
        return Err("batch_g must be a positive number".into());
    }
    Ok(())
}

fn sim_interval_ms(s: &SimSettings, sample_interval_ms: u64) -> u64 {
    (sample_interval_ms as f64 * s.acceleration).round() as u64
}

pub struct SimDriver {
    settings: SimSettings,
    interval_ms: u64,
    /// The roast in progress; `None` between roasts.
    sim: Option<Simulation>,
    config: Option<RoastConfig>,
    round: u64,
    /// Events of the roast that just ended, for its session end.
    ended_events: Value,
}

impl SimDriver {
    pub fn new(settings: SimSettings, sample_interval_ms: u64) -> Result<Self, DriverError> {
        validate(&settings, sample_interval_ms).map_err(DriverError::Config)?;
        Ok(SimDriver {
            interval_ms: sim_interval_ms(&settings, sample_interval_ms),
            settings,
            sim: None,
            config: None,
            round: 0,
            ended_events: Value::Null,
        })
    }

    fn roast_config(&self) -> Result<RoastConfig, DriverError> {
        let profile = builtin_profile(&self.settings.profile).ok_or_else(|| {
            DriverError::Config(format!("no profile {:?}", self.settings.profile))
        })?;
        let defaults = RoastConfig::default();
        Ok(RoastConfig {
            profile,
            // Each roast its own seed, reproducible from the configured one.
            seed: self.settings.seed.wrapping_add(self.round),
            batch_g: self.settings.batch_g.unwrap_or(defaults.batch_g),
            sample_interval_ms: self.interval_ms,
            pre_charge_ms: (self.settings.pre_charge_secs * 1000.0).round() as u64,
            ..defaults
        })
    }

    fn simulation(&mut self) -> Result<&mut Simulation, DriverError> {
        if self.sim.is_none() {
            let config = self.roast_config()?;
            let sim = Simulation::new(&config).map_err(|e| DriverError::Config(e.to_string()))?;
            self.config = Some(config);
            self.sim = Some(sim);
        }
        self.sim
            .as_mut()
            .ok_or_else(|| DriverError::Config("no simulation".into()))
    }
}

impl Driver for SimDriver {
    async fn connect(&mut self) -> Result<(), DriverError> {
        Ok(())
    }

    async fn read(&mut self) -> Result<Reading, DriverError> {
        let sim = self.simulation()?;
        match sim.next_sample() {
            Some(s) => Ok(Reading::Sample(Channels {
                bt: Some(s.bt),
                et: Some(s.et),
                gas: Some(s.gas),
                air: Some(s.air),
                drum: Some(s.drum),
                extra: [("ror".to_string(), s.ror)].into(),
            })),
            None => {
                self.ended_events = serde_json::to_value(sim.events()).unwrap_or_default();
                self.sim = None;
                self.round += 1;
                Ok(Reading::RoastEnded)
            }
        }
    }

    async fn apply(&mut self, control: Control, value: f64) -> Result<(), DriverError> {
        let control = match control {
            Control::Gas => sim_engine::Control::Gas,
            Control::Air => sim_engine::Control::Air,
            Control::Drum => sim_engine::Control::Drum,
        };
        self.simulation()?.set_control(control, value);
        Ok(())
    }

    async fn close(&mut self) {}

    fn session_start_metadata(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("simulator".into(), "sim-twin".into());
        m.insert("driver".into(), "sim".into());
        if let Some(c) = &self.config {
            m.insert("profile".into(), c.profile.name.clone().into());
            m.insert("seed".into(), c.seed.into());
            m.insert("batch_g".into(), c.batch_g.into());
            m.insert(
                "reference".into(),
                format!("sim-twin:{}", c.profile.name).into(),
            );
        }
        m
    }

    fn session_end_metadata(&self) -> Map<String, Value> {
        let mut m = Map::new();
        if !self.ended_events.is_null() {
            m.insert("events".into(), self.ended_events.clone());
        }
        m
    }
}
