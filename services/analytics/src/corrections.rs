//! Corrections proposed to the command service: when a live roast has drifted from its
//! reference and is not recovering (`roast::suggest`, the rule is documented there), analytics
//! proposes the gas change that would bring it back — `POST {command_url}/proposals` as a
//! service with its own token, `source: "analytics"`. The command service checks it against the
//! device's safety limits and a person approves or rejects it; analytics never acts itself.
//!
//! Roasts are judged as their predictions are made (every `predict_every_secs` of roast time),
//! and a session gets at most one suggestion per `min_interval_secs`, so that the roast has time
//! to answer the last change before it is judged again. The live task never waits for the
//! command service: it hands suggestions over a bounded channel (a full one drops the
//! suggestion, counted as `dropped`) and this task proposes them one at a time.

use std::sync::Arc;
use std::time::Duration;

use kit::service::Error;
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// `[analytics.corrections]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CorrectionSettings {
    /// Off by default: without the command service, and a person to approve, there is nobody
    /// to propose to.
    pub enabled: bool,
    /// The command service.
    pub command_url: String,
    /// The bearer token of a `service` role in the command service's token list
    /// (`SIMCORP_ANALYTICS_CORRECTIONS_TOKEN_FILE` reads it from a file).
    #[serde(skip_serializing)]
    pub token: Option<SecretString>,
    /// BT further than this from the reference's, °C, for `hold_secs`.
    pub bt_tolerance_c: f64,
    pub hold_secs: u32,
    /// A roast whose RoR already beats the reference's by this much (°C/min) towards it is
    /// recovering, and left alone.
    pub ror_margin: f64,
    /// The gas change proposed, % of the burner's range.
    pub gas_step: f64,
    /// Roast time between two proposals for one session.
    pub min_interval_secs: u32,
}

impl Default for CorrectionSettings {
    fn default() -> Self {
        let rule = roast::CorrectionRule::default();
        CorrectionSettings {
            enabled: false,
            command_url: "http://127.0.0.1:3004".into(),
            token: None,
            bt_tolerance_c: rule.bt_tolerance_c,
            hold_secs: u32::try_from(rule.hold_ms / 1000).unwrap_or(30),
            ror_margin: rule.ror_margin,
            gas_step: rule.gas_step,
            min_interval_secs: 120,
        }
    }
}

impl CorrectionSettings {
    pub(crate) fn rule(&self) -> roast::CorrectionRule {
        roast::CorrectionRule {
            bt_tolerance_c: self.bt_tolerance_c,
            hold_ms: i64::from(self.hold_secs) * 1000,
            ror_margin: self.ror_margin,
            gas_step: self.gas_step,
            ..roast::CorrectionRule::default()
        }
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        if !self.enabled {
            return Ok(());
        }
        let name = "analytics.corrections";
        if !self.command_url.starts_with("http") {
            return Err(format!(
                "{name}.command_url {:?} must be an http(s) URL",
                self.command_url
            ));
        }
        if self
            .token
            .as_ref()
            .is_none_or(|t| t.expose_secret().is_empty())
        {
            return Err(format!(
                "{name}.token: required when corrections are enabled (a service token of the \
                 command service; SIMCORP_ANALYTICS_CORRECTIONS_TOKEN_FILE reads it from a file)"
            ));
        }
        if !(self.bt_tolerance_c.is_finite() && self.bt_tolerance_c > 0.0) {
            return Err(format!("{name}.bt_tolerance_c must be above 0"));
        }
        if self.hold_secs < 5 {
            return Err(format!("{name}.hold_secs must be at least 5"));
        }
        if !(self.ror_margin.is_finite() && self.ror_margin >= 0.0) {
            return Err(format!("{name}.ror_margin must be 0 or more"));
        }
        if !(self.gas_step.is_finite() && self.gas_step > 0.0 && self.gas_step <= 100.0) {
            return Err(format!("{name}.gas_step must be within (0, 100]"));
        }
        if self.min_interval_secs < self.hold_secs {
            return Err(format!(
                "{name}.min_interval_secs ({}) must be at least hold_secs ({})",
                self.min_interval_secs, self.hold_secs
            ));
        }
        Ok(())
    }
}

/// A correction the live task found, to be proposed.
#[derive(Debug, Clone)]
pub(crate) struct Suggested {
    pub(crate) device_id: String,
    pub(crate) session: String,
    pub(crate) correction: roast::Correction,
}

/// Proposes each suggestion to the command service, until stopped.
pub(crate) async fn propose(
    mut rx: mpsc::Receiver<Suggested>,
    settings: CorrectionSettings,
    stop: CancellationToken,
) -> Result<(), Error> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| Error::start("building the command service's HTTP client", e))?;
    let url = format!("{}/proposals", settings.command_url.trim_end_matches('/'));
    let token: Arc<str> = settings
        .token
        .as_ref()
        .map_or("", |t| t.expose_secret())
        .into();
    loop {
        let s = tokio::select! {
            biased;
            () = stop.cancelled() => return Ok(()),
            s = rx.recv() => match s {
                Some(s) => s,
                None => return Ok(()),
            },
        };
        let body = serde_json::json!({
            "device_id": s.device_id,
            "session": s.session,
            "control": "gas",
            "value": s.correction.gas_to,
            "reason": s.correction.reason,
            "source": "analytics",
        });
        let sent = client
            .post(&url)
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await;
        let (status, answer) = match sent {
            Ok(resp) => {
                let status = resp.status();
                (
                    status,
                    resp.json::<serde_json::Value>().await.unwrap_or_default(),
                )
            }
            Err(error) => {
                crate::metrics::correction("failed");
                tracing::warn!(device_id = %s.device_id, session = %s.session, %error,
                    "could not reach the command service to propose a correction");
                continue;
            }
        };
        let field = |k: &str| {
            answer
                .get(k)
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_owned()
        };
        if status.is_success() {
            crate::metrics::correction("proposed");
            tracing::info!(device_id = %s.device_id, session = %s.session, id = %field("id"),
                reason = %s.correction.reason, "proposed a correction");
        } else if status.is_client_error() && status.as_u16() != 401 && status.as_u16() != 403 {
            // The safety limits or the session said no: the command service's judgement.
            crate::metrics::correction("refused");
            tracing::info!(device_id = %s.device_id, session = %s.session, %status,
                refused = %field("reason"), message = %field("error"),
                "the command service refused a correction");
        } else {
            crate::metrics::correction("failed");
            tracing::warn!(device_id = %s.device_id, session = %s.session, %status,
                reason = %field("reason"), message = %field("error"),
                "the command service did not take a correction");
        }
    }
}
