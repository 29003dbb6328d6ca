//! The command lifecycle: proposals checked against the safety limits, decisions, execution
//! (signing and publishing), acknowledgements, expiry and timeouts, and device keys. Every state
//! change is one conditional transition in the store with its audit entry, so it happens once
//! whoever asks twice, and survives a restart.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use model::command::{Ack, Command, Control, Outcome};
use rand::RngCore as _;
use serde::Serialize;
use store::{Changes, CommandRecord, CommandsStore, NewAudit};
use tokio::sync::{Notify, broadcast};

use crate::auth::{Caller, Role};
use crate::config::Settings;
use crate::error::{ApiErr, store_error};

/// States, as stored.
pub(crate) mod state {
    pub(crate) const PROPOSED: &str = "proposed";
    pub(crate) const APPROVED: &str = "approved";
    pub(crate) const REJECTED: &str = "rejected";
    pub(crate) const EXPIRED: &str = "expired";
    pub(crate) const SENT: &str = "sent";
    pub(crate) const ACKED: &str = "acked";
    pub(crate) const FAILED: &str = "failed";
    pub(crate) const TIMED_OUT: &str = "timed_out";
    pub(crate) const ALL: [&str; 8] = [
        PROPOSED, APPROVED, REJECTED, EXPIRED, SENT, ACKED, FAILED, TIMED_OUT,
    ];
}

/// What the stream tells of a device: its session and current control values.
#[derive(Debug, Clone, Default)]
pub(crate) struct DeviceState {
    pub(crate) session: Option<String>,
    pub(crate) active: bool,
    pub(crate) roaster_model: Option<String>,
    /// gas, air, drum: value and when seen (epoch ms).
    pub(crate) values: [Option<(f64, i64)>; 3],
}

fn index(c: Control) -> usize {
    match c {
        Control::Gas => 0,
        Control::Air => 1,
        Control::Drum => 2,
    }
}

/// A state change, as the SSE stream sends it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct StateChange {
    pub(crate) id: String,
    pub(crate) device_id: String,
    pub(crate) state: String,
    pub(crate) actor: String,
    pub(crate) reason: String,
    pub(crate) ts_ms: i64,
}

/// A proposal as asked for.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Proposal {
    pub(crate) device_id: String,
    pub(crate) session: Option<String>,
    pub(crate) control: String,
    pub(crate) value: f64,
    pub(crate) reason: String,
    pub(crate) source: Option<String>,
}

#[derive(Clone)]
pub(crate) struct App {
    pub(crate) store: CommandsStore,
    pub(crate) settings: Arc<Settings>,
    pub(crate) devices: Arc<Mutex<HashMap<String, DeviceState>>>,
    pub(crate) changes: broadcast::Sender<StateChange>,
    /// Wakes the executor when a command is approved.
    pub(crate) approved: Arc<Notify>,
    pub(crate) key: keys::Key,
    pub(crate) publisher: Arc<mqtt::Publisher>,
}

fn audit(
    actor: &str,
    action: &str,
    subject: &str,
    reason: &str,
    detail: serde_json::Value,
) -> NewAudit {
    NewAudit {
        ts_ms: model::now_ms(),
        actor: actor.to_owned(),
        action: action.to_owned(),
        subject: subject.to_owned(),
        reason: reason.to_owned(),
        detail: detail.to_string(),
    }
}

impl App {
    fn announce(&self, c: &CommandRecord, actor: &str, reason: &str) {
        let _ = self.changes.send(StateChange {
            id: c.id.clone(),
            device_id: c.device_id.clone(),
            state: c.state.clone(),
            actor: actor.to_owned(),
            reason: reason.to_owned(),
            ts_ms: c.updated_ms,
        });
        crate::metrics::transition(
            state::ALL
                .into_iter()
                .find(|s| *s == c.state)
                .unwrap_or("unknown"),
        );
    }

    /// One transition; `None` when the command was not in `from`.
    async fn step(
        &self,
        id: &str,
        from: &str,
        to: &str,
        changes: Changes,
        actor: &str,
        reason: &str,
    ) -> Result<Option<CommandRecord>, store::StoreError> {
        let a = audit(actor, to, id, reason, serde_json::json!({ "from": from }));
        let moved = self.store.transition(id, from, to, &changes, &a).await?;
        if let Some(c) = &moved {
            self.announce(c, actor, reason);
        }
        Ok(moved)
    }

    /// Checks a proposal against the device's session and the safety limits, and stores it.
    pub(crate) async fn propose(
        &self,
        caller: &Caller,
        p: Proposal,
    ) -> Result<CommandRecord, ApiErr> {
        caller.require(
            &[Role::Operator, Role::Service, Role::Admin],
            "propose a command",
        )?;
        match self.check(caller, &p).await {
            Ok(record) => {
                let a = audit(
                    &caller.actor,
                    state::PROPOSED,
                    &record.id,
                    &record.reason,
                    serde_json::json!({
                        "device_id": record.device_id, "control": record.control,
                        "value": record.value, "from_value": record.from_value,
                        "source": record.source,
                    }),
                );
                self.store
                    .insert_command(&record, &a)
                    .await
                    .map_err(store_error)?;
                self.announce(&record, &caller.actor, &record.reason);
                Ok(record)
            }
            Err(e) => {
                if e.reason() != "internal" {
                    crate::metrics::proposal_refused(e.reason());
                    let a = audit(
                        &caller.actor,
                        "proposal_refused",
                        &p.device_id,
                        e.reason(),
                        serde_json::json!({ "control": p.control, "value": p.value, "error": e.message() }),
                    );
                    self.store.audit(&a).await.map_err(store_error)?;
                }
                Err(e)
            }
        }
    }

    async fn check(&self, caller: &Caller, p: &Proposal) -> Result<CommandRecord, ApiErr> {
        if !model::valid_id(&p.device_id) {
            return Err(ApiErr::bad_request(
                "invalid_device_id",
                "device_id: must be 1-64 characters of [A-Za-z0-9._:-]",
            ));
        }
        let control = Control::parse(&p.control).ok_or_else(|| {
            ApiErr::bad_request(
                "unknown_control",
                format!("control {:?}: must be gas, air or drum", p.control),
            )
        })?;
        if !p.value.is_finite() {
            return Err(ApiErr::bad_request(
                "invalid_value",
                "value must be a number",
            ));
        }
        if p.reason.trim().is_empty() || p.reason.len() > 500 {
            return Err(ApiErr::bad_request(
                "invalid_reason",
                "reason: 1-500 characters, required",
            ));
        }
        let source = match p.source.as_deref() {
            None if caller.has(Role::Service) => "analytics",
            None => "operator",
            Some(s @ ("operator" | "analytics" | "mission")) => s,
            Some(s) => {
                return Err(ApiErr::bad_request(
                    "invalid_source",
                    format!("source {s:?}: must be operator, analytics or mission"),
                ));
            }
        };
        let now = model::now_ms();
        let device = self
            .devices
            .lock()
            .map_err(|_| ApiErr::internal("the devices' lock was poisoned"))?
            .get(&p.device_id)
            .cloned()
            .unwrap_or_default();
        let session = match (&device.session, device.active) {
            (Some(s), true) => s.clone(),
            _ => {
                return Err(ApiErr::refused(
                    "no_active_session",
                    format!("device {} is not in an active session", p.device_id),
                ));
            }
        };
        if let Some(asked) = &p.session
            && *asked != session
        {
            return Err(ApiErr::refused(
                "wrong_session",
                format!(
                    "device {} is in session {session}, not {asked}",
                    p.device_id
                ),
            )
            .with("session", session.into()));
        }
        let limits = self
            .settings
            .limits
            .of(device.roaster_model.as_deref(), control);
        let limit_json = serde_json::to_value(limits).unwrap_or_default();
        if p.value < limits.min || p.value > limits.max {
            return Err(ApiErr::refused(
                "out_of_range",
                format!(
                    "{control} {} is outside {}..={}",
                    p.value, limits.min, limits.max
                ),
            )
            .with("limit", limit_json));
        }
        let max_age =
            i64::try_from(self.settings.current_value_max_age_secs).unwrap_or(i64::MAX / 2) * 1000;
        let current = match device.values[index(control)] {
            Some((v, at)) if now - at <= max_age => v,
            _ => {
                return Err(ApiErr::refused(
                    "current_value_unknown",
                    format!(
                        "no recent {control} reading of device {}: the step cannot be checked",
                        p.device_id
                    ),
                ));
            }
        };
        let step = (p.value - current).abs();
        if step > limits.max_step {
            return Err(ApiErr::refused(
                "step_too_large",
                format!(
                    "{control} from {current} to {} is a step of {step}, more than {}",
                    p.value, limits.max_step
                ),
            )
            .with("current", current.into())
            .with("limit", limit_json));
        }
        let recent = self
            .store
            .recent(&p.device_id, control.as_str(), now - 60_000)
            .await
            .map_err(store_error)?;
        let moved: f64 = recent
            .iter()
            .filter(|c| {
                [state::PROPOSED, state::APPROVED, state::SENT, state::ACKED]
                    .contains(&c.state.as_str())
            })
            .map(|c| c.from_value.map_or(0.0, |f| (c.value - f).abs()))
            .sum();
        if moved + step > limits.max_rate_per_min {
            return Err(ApiErr::refused(
                "rate_exceeded",
                format!(
                    "{control} would move {} in a minute, more than {}",
                    moved + step,
                    limits.max_rate_per_min
                ),
            )
            .with("limit", limit_json));
        }
        let ttl = i64::try_from(self.settings.proposal_ttl_secs).unwrap_or(i64::MAX / 2) * 1000;
        Ok(CommandRecord {
            id: format!("cmd-{}", uuid::Uuid::new_v4().simple()),
            device_id: p.device_id.clone(),
            session,
            control: control.as_str().to_owned(),
            value: p.value,
            from_value: Some(current),
            reason: p.reason.trim().to_owned(),
            proposer: caller.actor.clone(),
            source: source.to_owned(),
            state: state::PROPOSED.to_owned(),
            created_ms: now,
            expires_ms: now + ttl,
            decided_by: None,
            decided_ms: None,
            sent_ms: None,
            not_after_ms: None,
            nonce: None,
            key_id: None,
            finished_ms: None,
            outcome_reason: None,
            updated_ms: now,
        })
    }

    /// Approves (or rejects) a proposal: by an approver who is not its proposer, before it expires.
    pub(crate) async fn decide(
        &self,
        caller: &Caller,
        id: &str,
        approve: bool,
        reason: Option<String>,
    ) -> Result<CommandRecord, ApiErr> {
        caller.require(
            &[Role::Approver],
            if approve {
                "approve a command"
            } else {
                "reject a command"
            },
        )?;
        let c = self
            .store
            .command(id)
            .await
            .map_err(store_error)?
            .ok_or_else(|| ApiErr::not_found(format!("no proposal {id:?}")))?;
        if c.proposer == caller.actor {
            let a = audit(
                &caller.actor,
                "decision_refused",
                id,
                "own_proposal",
                serde_json::json!({}),
            );
            self.store.audit(&a).await.map_err(store_error)?;
            return Err(ApiErr::forbidden(
                "own_proposal",
                format!(
                    "{} proposed {id}: someone else must decide it",
                    caller.actor
                ),
            ));
        }
        let now = model::now_ms();
        if c.state == state::PROPOSED && c.expires_ms < now {
            self.expire(&c).await.map_err(store_error)?;
            return Err(ApiErr::conflict(
                "expired",
                format!("proposal {id} expired"),
            ));
        }
        let to = if approve {
            state::APPROVED
        } else {
            state::REJECTED
        };
        let why = reason.unwrap_or_default();
        let changes = Changes {
            decided_by: Some(caller.actor.clone()),
            decided_ms: Some(now),
            ..Changes::default()
        };
        match self
            .step(id, state::PROPOSED, to, changes, &caller.actor, &why)
            .await
            .map_err(store_error)?
        {
            Some(moved) => {
                if approve {
                    self.approved.notify_one();
                }
                Ok(moved)
            }
            None => {
                let now_state = self
                    .store
                    .command(id)
                    .await
                    .map_err(store_error)?
                    .map(|c| c.state)
                    .unwrap_or_default();
                Err(ApiErr::conflict(
                    "not_proposed",
                    format!("proposal {id} is {now_state}, no longer proposed"),
                )
                .with("state", now_state.into()))
            }
        }
    }

    async fn expire(&self, c: &CommandRecord) -> Result<(), store::StoreError> {
        self.step(
            &c.id,
            state::PROPOSED,
            state::EXPIRED,
            Changes::default(),
            "system",
            "not decided in time",
        )
        .await?;
        Ok(())
    }

    /// Sends every approved command, expires undecided proposals and times out unanswered
    /// commands. Runs on approval, on a timer, and at start (what a restart left half-way).
    pub(crate) async fn sweep(&self) -> Result<(), store::StoreError> {
        let now = model::now_ms();
        for c in self.store.in_state(state::APPROVED, 500).await? {
            self.send(&c).await?;
        }
        for c in self.store.in_state(state::PROPOSED, 1000).await? {
            if c.expires_ms < now {
                self.expire(&c).await?;
            }
        }
        let timeout = i64::try_from(self.settings.ack_timeout_secs).unwrap_or(i64::MAX / 2) * 1000;
        for c in self.store.in_state(state::SENT, 1000).await? {
            if c.sent_ms.is_some_and(|s| s + timeout < now) {
                let changes = Changes {
                    finished_ms: Some(now),
                    outcome_reason: Some("no acknowledgement".into()),
                    ..Changes::default()
                };
                self.step(
                    &c.id,
                    state::SENT,
                    state::TIMED_OUT,
                    changes,
                    "system",
                    "no acknowledgement in time",
                )
                .await?;
            }
        }
        Ok(())
    }

    /// Signs and publishes one approved command. Marked sent *before* it is published: a crash
    /// in between leaves a command that times out, never one sent twice.
    async fn send(&self, c: &CommandRecord) -> Result<(), store::StoreError> {
        let Some(control) = Control::parse(&c.control) else {
            return Ok(());
        };
        let now = model::now_ms();
        let ttl = i64::try_from(self.settings.command_ttl_secs).unwrap_or(i64::MAX / 2) * 1000;
        let mut nonce = [0u8; 8];
        rand::rng().fill_bytes(&mut nonce);
        let mut command = Command {
            id: c.id.clone(),
            device_id: c.device_id.clone(),
            session: c.session.clone(),
            control,
            value: c.value,
            issued_ms: now,
            not_after_ms: now + ttl,
            nonce: nonce.iter().map(|b| format!("{b:02x}")).collect(),
            key_id: self.key.label().to_owned(),
            sig: [0; 64],
        };
        let key = self.key.clone();
        let bytes = command.signed_bytes();
        // An HSM call blocks: off the executor.
        let signed = tokio::task::spawn_blocking(move || key.sign(&bytes)).await;
        command.sig = match signed {
            Ok(Ok(sig)) => sig,
            Ok(Err(error)) => {
                tracing::error!(%error, command = %c.id, "could not sign a command; it stays approved");
                return Ok(());
            }
            Err(error) => {
                tracing::error!(%error, "the signing task failed");
                return Ok(());
            }
        };
        let changes = Changes {
            sent_ms: Some(now),
            not_after_ms: Some(command.not_after_ms),
            nonce: Some(command.nonce.clone()),
            key_id: Some(command.key_id.clone()),
            ..Changes::default()
        };
        if self
            .step(
                &c.id,
                state::APPROVED,
                state::SENT,
                changes,
                "system",
                "signed and published",
            )
            .await?
            .is_some()
        {
            let topic = format!("roasters/{}/commands", c.device_id);
            if let Err(error) = self
                .publisher
                .publish(topic, rumqttc::QoS::AtLeastOnce, command.to_json())
                .await
            {
                tracing::error!(%error, command = %c.id, "could not publish a command; it will time out");
            }
        }
        Ok(())
    }

    /// An acknowledgement from `roasters/{device_id}/commands/ack`: verified against the
    /// device's registered key, then it completes its command. Anything wrong is refused,
    /// counted and audited, and changes no state.
    pub(crate) async fn on_ack(
        &self,
        device_id: &str,
        payload: &[u8],
    ) -> Result<(), store::StoreError> {
        let refuse = |reason: &'static str, subject: String, detail: serde_json::Value| async move {
            crate::metrics::ack_refused(reason);
            tracing::warn!(device_id, reason, "acknowledgement refused");
            let a = audit(device_id, "ack_refused", &subject, reason, detail);
            self.store.audit(&a).await.map(|_| ())
        };
        let ack = match Ack::decode(device_id, payload) {
            Ok(a) => a,
            Err(e) => {
                return refuse(
                    "malformed",
                    device_id.to_owned(),
                    serde_json::json!({ "error": e.to_string() }),
                )
                .await;
            }
        };
        let subject = ack.command_id.clone();
        let detail = serde_json::json!({ "device_id": device_id, "key_id": ack.key_id });
        let Some(c) = self.store.command(&ack.command_id).await? else {
            return refuse("unknown_command", subject, detail).await;
        };
        if c.device_id != device_id {
            return refuse("misaddressed", subject, detail).await;
        }
        let key = self.store.device_key(device_id, &ack.key_id).await?;
        let Some(key) = key else {
            return refuse("unknown_key", subject, detail).await;
        };
        match key.state.as_str() {
            "revoked" => return refuse("revoked_key", subject, detail).await,
            "retired" => return refuse("retired_key", subject, detail).await,
            _ => {}
        }
        let verified = keys::PublicKey::from_base64(&key.public_key)
            .map(|pk| keys::verify(&pk, &ack.signed_bytes(), &ack.sig))
            .unwrap_or(false);
        if !verified {
            return refuse("bad_signature", subject, detail).await;
        }
        if key.state == "pending" {
            let a = audit(
                device_id,
                "key_confirmed",
                &format!("{device_id}/{}", key.key_id),
                "first message signed by the new key",
                serde_json::json!({}),
            );
            self.store
                .confirm_device_key(device_id, &key.key_id, &a)
                .await?;
        }
        let (to, why) = match ack.outcome {
            Outcome::Applied => (state::ACKED, "applied".to_owned()),
            Outcome::Refused => (
                state::FAILED,
                ack.reason.map_or("refused", |r| r.as_str()).to_owned(),
            ),
        };
        let changes = Changes {
            finished_ms: Some(ack.ts_ms),
            outcome_reason: Some(why.clone()),
            ..Changes::default()
        };
        if self
            .step(&c.id, state::SENT, to, changes, device_id, &why)
            .await?
            .is_none()
        {
            // Already answered (a redelivered ack: nothing to do), or timed out (late: recorded).
            if c.state == state::TIMED_OUT {
                let a = audit(device_id, "late_ack", &c.id, &why, detail);
                self.store.audit(&a).await?;
            }
        }
        Ok(())
    }

    /// Telemetry and session messages keep the devices' state current. What a session message
    /// changed is returned, for the store: telemetry after a restart tells a device's session
    /// again, but only its start names the roaster model whose limits apply.
    pub(crate) fn on_stream(
        &self,
        topic: &str,
        payload: &[u8],
        received_ms: i64,
    ) -> Option<store::DeviceSession> {
        let t = model::parse_topic(topic).ok()?;
        let limits = model::Limits::default();
        let mut devices = self.devices.lock().ok()?;
        match t.kind {
            model::TopicKind::Session => {
                let e = model::decode_session(t.device_id, payload, received_ms, &limits).ok()?;
                let d = devices.entry(e.device_id.clone()).or_default();
                match e.state {
                    model::SessionState::Start => {
                        d.session = Some(e.session.clone());
                        d.active = true;
                        d.roaster_model = e
                            .metadata
                            .get("roaster_model")
                            .and_then(|m| m.as_str())
                            .map(str::to_owned);
                    }
                    model::SessionState::End => {
                        if d.session.as_deref() != Some(e.session.as_str()) {
                            return None;
                        }
                        d.active = false;
                    }
                }
                Some(store::DeviceSession {
                    device_id: e.device_id.clone(),
                    session: e.session.clone(),
                    active: d.active,
                    roaster_model: d.roaster_model.clone(),
                    ts_ms: e.ts_ms,
                })
            }
            model::TopicKind::Telemetry => {
                let decoded =
                    model::decode_telemetry(t.device_id, payload, received_ms, &limits).ok()?;
                for p in decoded.points {
                    let d = devices.entry(p.device_id.clone()).or_default();
                    // A session met mid-roast (this service started after its start message).
                    if d.session.as_deref() != Some(p.session.as_str()) && !d.active {
                        d.session = Some(p.session.clone());
                        d.active = true;
                    }
                    for (c, v) in [
                        (Control::Gas, p.channels.gas),
                        (Control::Air, p.channels.air),
                        (Control::Drum, p.channels.drum),
                    ] {
                        if let Some(v) = v {
                            d.values[index(c)] = Some((v, received_ms));
                        }
                    }
                }
                None
            }
            _ => None,
        }
    }

    /// The devices' sessions as recorded before a restart: the session and the roaster model
    /// stand until a session message says otherwise; control values wait for telemetry.
    pub(crate) fn remember(&self, recorded: Vec<store::DeviceSession>) {
        let Ok(mut devices) = self.devices.lock() else {
            return;
        };
        for r in recorded {
            let d = devices.entry(r.device_id).or_default();
            d.session = Some(r.session);
            d.active = r.active;
            d.roaster_model = r.roaster_model;
        }
    }

    // Device keys.

    pub(crate) async fn register_key(
        &self,
        caller: &Caller,
        device_id: &str,
        key_id: &str,
        public_key: &str,
        keystore: Option<&str>,
    ) -> Result<store::DeviceKey, ApiErr> {
        caller.require(&[Role::Device, Role::Admin], "register a device key")?;
        if !model::valid_id(device_id) || !model::valid_id(key_id) {
            return Err(ApiErr::bad_request(
                "invalid_id",
                "device_id and key_id: 1-64 characters of [A-Za-z0-9._:-]",
            ));
        }
        let pk = keys::PublicKey::from_base64(public_key)
            .map_err(|e| ApiErr::bad_request("invalid_public_key", e.to_string()))?;
        let a = audit(
            &caller.actor,
            "key_registered",
            &format!("{device_id}/{key_id}"),
            "",
            serde_json::json!({ "public_key": pk.to_base64(), "keystore": keystore }),
        );
        self.store
            .add_device_key(device_id, key_id, &pk.to_base64(), &a)
            .await
            .map_err(|e| {
                if e.kind() == store::ErrorKind::Conflict {
                    ApiErr::conflict(
                        "key_exists",
                        format!("device {device_id} already has a key {key_id}"),
                    )
                } else {
                    store_error(e)
                }
            })
    }

    pub(crate) async fn key_op(
        &self,
        caller: &Caller,
        device_id: &str,
        key_id: &str,
        revoke: bool,
    ) -> Result<store::DeviceKey, ApiErr> {
        caller.require(
            &[Role::Admin],
            if revoke {
                "revoke a device key"
            } else {
                "confirm a device key"
            },
        )?;
        let subject = format!("{device_id}/{key_id}");
        let a = audit(
            &caller.actor,
            if revoke {
                "key_revoked"
            } else {
                "key_confirmed"
            },
            &subject,
            "",
            serde_json::json!({}),
        );
        let done = if revoke {
            self.store.revoke_device_key(device_id, key_id, &a).await
        } else {
            self.store.confirm_device_key(device_id, key_id, &a).await
        }
        .map_err(store_error)?;
        match done {
            Some(k) => Ok(k),
            None => match self
                .store
                .device_key(device_id, key_id)
                .await
                .map_err(store_error)?
            {
                None => Err(ApiErr::not_found(format!(
                    "device {device_id} has no key {key_id}"
                ))),
                Some(k) => Err(ApiErr::conflict(
                    if revoke {
                        "already_revoked"
                    } else {
                        "not_pending"
                    },
                    format!("key {subject} is {}", k.state),
                )
                .with("state", k.state.into())),
            },
        }
    }
}
