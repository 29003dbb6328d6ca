//! The heat-transfer model: a lumped two-node roaster — the drum (with the air in it) and the
//! beans — plus the two probes that read them.
//!
//! ```text
//! burner ─▶ drum ──(convection + contact)──▶ beans ──▶ water vapour (latent heat)
//!  gas %    T_d  ──▶ exhaust air, shell  air %  T_b   ◀── exotherm near first crack
//!                                       drum %
//! ET probe: the air between drum and beans, T_d − γ·load·(T_d − T_b), lag 8 s
//! BT probe: the bean pile, T_b + α·(T_d − T_b), lag 36 s
//! ```
//!
//! Per step of `dt` seconds (explicit Euler; `dt` = 0.1 s is far below every time constant):
//!
//! - `C_d·dT_d/dt = P·gas − G(air)·(T_d − T_amb) − Q`, with `G(air) = G_max·(0.2 + 0.8·air) + UA`
//! - `Q = m_dry·k·(0.55 + 0.30·air + 0.15·drum)·(T_d − T_b)` — heat into the beans
//! - `C_b·dT_b/dt = (1 − s)·Q + E`, `C_b = m_dry·(1.20 + 0.003·T_b) + m_w·4.18` kJ/K
//! - `dm_w/dt = −s·Q/L` — a share `s = 0.6·(m_w/m_w0)·ramp((T_b − 90)/50)` of the heat
//!   evaporates water; it is what flattens the middle of the roast, and it fades as the beans
//!   dry, so the curve never stalls
//! - `E = 0.01 kW/kg·m_dry·ramp((T_b − 185)/30)` — the exothermic reactions around first crack,
//!   kept small: they soften the decline of RoR but must not turn it into a flick
//!
//! where `ramp(x)` is `x` clamped to 0..=1. The probes are first-order lags; the BT probe starts
//! at the preheated drum's temperature, falls as the cold beans surround it and meets them at the
//! turning point — which is why BT's minimum comes a minute after charge although the beans only
//! ever warm up. Dry end and first crack are bean-temperature thresholds (with a little
//! per-batch variation), read by the lagging probe a degree or two lower.
//!
//! The constants were fitted so that the built-in profiles, at 60–100 % of the nominal batch,
//! land where real roasts of this class of roaster do (turning point ~91 °C at ~1:11, dry end
//! ~155 °C at ~5:00, first crack ~198 °C at 8:40–10:30, drop at 208–219 °C at 10:15–13:30, RoR
//! declining from ~20 °C/min after the turning point to ~4–7 °C/min at drop). A bigger batch
//! roasts slower under the same profile (first crack ~1 min later at 5 kg than at 3 kg), as on a
//! real roaster.

use super::RoastConfig;
use super::rng::Rng;

/// Burner output at 100 % gas, kW.
const BURNER_KW: f64 = 20.0;
/// Heat capacity of the drum, its front plate and the air in them, kJ/K.
const DRUM_KJ_PER_K: f64 = 72.5;
/// Heat carried off by the exhaust at 100 % airflow, kW/K above ambient.
const EXHAUST_KW_PER_K: f64 = 0.06;
/// Share of the exhaust that flows with the fan off (the chimney's natural draft).
const NATURAL_DRAFT: f64 = 0.2;
/// Heat lost through the roaster's shell, kW/K above ambient.
const SHELL_KW_PER_K: f64 = 0.012;
/// Heat transfer from the drum to the beans, kW/K per kg of dry beans at full air and drum.
const BEAN_KW_PER_K_KG: f64 = 0.0141;
/// Specific heat of dry coffee, kJ/(kg·K), rising with temperature.
const DRY_C0_KJ_PER_KG_K: f64 = 1.20;
const DRY_C1_KJ_PER_KG_K2: f64 = 0.0030;
const WATER_KJ_PER_KG_K: f64 = 4.18;
/// Latent heat of the beans' water (vaporisation plus desorption), kJ/kg.
const LATENT_KJ_PER_KG: f64 = 2400.0;
/// Largest share of the heat into the beans that goes into evaporation, and the bean
/// temperatures over which evaporation sets in.
const EVAPORATION_SHARE: f64 = 0.6;
const EVAPORATION_FROM_C: f64 = 90.0;
const EVAPORATION_SPAN_C: f64 = 50.0;
/// Heat of the exothermic reactions at full strength, kW per kg of dry beans, and the bean
/// temperatures over which they set in.
const EXOTHERM_KW_PER_KG: f64 = 0.01;
const EXOTHERM_FROM_C: f64 = 185.0;
const EXOTHERM_SPAN_C: f64 = 30.0;
/// How much of the drum-to-bean difference the BT probe sees (it touches the drum's air too),
/// and its time constant.
const BT_PROBE_AIR_SHARE: f64 = 0.09;
const BT_PROBE_TAU_S: f64 = 36.0;
/// How far a nominal batch cools the air the ET probe reads, as a share of the drum-to-bean
/// difference (in proportion to the batch), and the probe's time constant.
const ET_DIP_AT_NOMINAL: f64 = 0.38;
const ET_PROBE_TAU_S: f64 = 8.0;
/// Bean temperatures of dry end and first crack (before per-batch variation).
const DRY_END_C: f64 = 155.8;
const FIRST_CRACK_C: f64 = 199.7;

/// Standard deviations of the probes' noise, °C.
pub(super) const BT_NOISE_C: f64 = 0.1;
pub(super) const ET_NOISE_C: f64 = 0.3;

/// What the probes read, before noise.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Readings {
    pub(super) bt: f64,
    pub(super) et: f64,
}

/// The state of one roast and the constants of this batch.
#[derive(Debug, Clone)]
pub(super) struct Model {
    ambient_c: f64,
    /// Batch size as a share of the nominal one.
    load: f64,
    dry_kg: f64,
    water0_kg: f64,
    burner_kw: f64,
    bean_kw_per_k: f64,
    dry_end_c: f64,
    first_crack_c: f64,

    drum_c: f64,
    bean_c: f64,
    water_kg: f64,
    bt_probe_c: f64,
    et_probe_c: f64,
}

impl Model {
    /// The roaster preheated to the charge ET, and the green beans at room temperature. The
    /// batch-to-batch variation is drawn here, in a fixed order.
    pub(super) fn new(config: &RoastConfig, variation: &mut Rng) -> Self {
        // Bean size and density: how readily the beans take up heat.
        let transfer = 1.0 + 0.015 * variation.symmetric();
        // The moisture on the sack's label is an average.
        let moisture = (config.moisture_pct + 0.3 * variation.symmetric()) / 100.0;
        // Green coffee stored near, not at, room temperature.
        let bean_c = config.ambient_c + 1.5 * variation.symmetric();
        // Gas pressure.
        let burner = 1.0 + 0.01 * variation.symmetric();
        // Crop and processing shift where the beans yellow and crack.
        let dry_end_c = DRY_END_C + 1.0 * variation.symmetric();
        let first_crack_c = FIRST_CRACK_C + 0.7 * variation.symmetric();

        let batch_kg = config.batch_g / 1000.0;
        let dry_kg = batch_kg * (1.0 - moisture);
        Model {
            ambient_c: config.ambient_c,
            load: config.batch_g / super::NOMINAL_BATCH_G,
            dry_kg,
            water0_kg: batch_kg * moisture,
            burner_kw: BURNER_KW * burner,
            bean_kw_per_k: dry_kg * BEAN_KW_PER_K_KG * transfer,
            dry_end_c,
            first_crack_c,
            drum_c: config.charge_et_c,
            bean_c,
            water_kg: batch_kg * moisture,
            // Both probes sat in the empty, preheated drum.
            bt_probe_c: config.charge_et_c,
            et_probe_c: config.charge_et_c,
        }
    }

    /// Advances the state by `dt_s` seconds under `controls`.
    pub(super) fn step(&mut self, controls: &super::ControlStep, dt_s: f64) {
        let gas = controls.gas / 100.0;
        let air = controls.air / 100.0;
        let drum = controls.drum / 100.0;

        let to_beans =
            self.bean_kw_per_k * (0.55 + 0.30 * air + 0.15 * drum) * (self.drum_c - self.bean_c);
        let lost = (EXHAUST_KW_PER_K * (NATURAL_DRAFT + (1.0 - NATURAL_DRAFT) * air)
            + SHELL_KW_PER_K)
            * (self.drum_c - self.ambient_c);
        let evaporating = if self.water0_kg > 0.0 {
            EVAPORATION_SHARE
                * (self.water_kg / self.water0_kg)
                * ramp((self.bean_c - EVAPORATION_FROM_C) / EVAPORATION_SPAN_C)
        } else {
            0.0
        };
        let exotherm = EXOTHERM_KW_PER_KG
            * self.dry_kg
            * ramp((self.bean_c - EXOTHERM_FROM_C) / EXOTHERM_SPAN_C);
        let bean_kj_per_k = self.dry_kg * (DRY_C0_KJ_PER_KG_K + DRY_C1_KJ_PER_KG_K2 * self.bean_c)
            + self.water_kg * WATER_KJ_PER_KG_K;

        let d_drum = (self.burner_kw * gas - lost - to_beans) / DRUM_KJ_PER_K;
        let d_bean = ((1.0 - evaporating) * to_beans + exotherm) / bean_kj_per_k;
        let d_water = -evaporating * to_beans / LATENT_KJ_PER_KG;
        let bt_seen = self.bean_c + BT_PROBE_AIR_SHARE * (self.drum_c - self.bean_c);
        let et_seen = self.drum_c - ET_DIP_AT_NOMINAL * self.load * (self.drum_c - self.bean_c);

        self.drum_c += d_drum * dt_s;
        self.bean_c += d_bean * dt_s;
        self.water_kg = (self.water_kg + d_water * dt_s).max(0.0);
        self.bt_probe_c += (bt_seen - self.bt_probe_c) * dt_s / BT_PROBE_TAU_S;
        self.et_probe_c += (et_seen - self.et_probe_c) * dt_s / ET_PROBE_TAU_S;
    }

    pub(super) fn readings(&self) -> Readings {
        Readings {
            bt: self.bt_probe_c,
            et: self.et_probe_c,
        }
    }

    pub(super) fn bean_c(&self) -> f64 {
        self.bean_c
    }

    pub(super) fn dry_end_c(&self) -> f64 {
        self.dry_end_c
    }

    pub(super) fn first_crack_c(&self) -> f64 {
        self.first_crack_c
    }
}

fn ramp(x: f64) -> f64 {
    x.clamp(0.0, 1.0)
}
