//! From an MQTT delivery to the records of one pipeline envelope.
//!
//! Every message produces an envelope, good or bad: a refused payload becomes a dead letter that
//! is stored (and only then acknowledged) like any point. So bad input is kept for inspection,
//! never crashes anything, and never holds up the good input queued behind it.
//!
//! Each message is decoded in a `message` span carrying its `device_id` and `session_id` once
//! they are known, so the lines logged about it (a refusal, a flood) name both. The span is at
//! debug level: at the default `info` it is never created, because this runs for every message
//! (10,000+ a second) and an enabled span costs allocations.

use std::sync::Arc;

use model::{
    Batch, DeadLetter, Limits, Rejection, TopicKind, decode_event, decode_session, decode_telemetry,
};
use mqtt::{AckToken, Delivery};
use pipeline::Envelope;

use crate::limiter::{DeviceLimiter, Verdict};
use crate::signatures::Verifier;

/// Decodes deliveries; cheap to clone into the subscriber's handler.
#[derive(Debug, Clone)]
pub(crate) struct Decoder {
    pub(crate) limits: Limits,
    pub(crate) dead_letter_payload_bytes: usize,
    /// The per-device flood limit; `None`: unlimited.
    pub(crate) limiter: Option<Arc<DeviceLimiter>>,
    /// Device signatures, when some are required.
    pub(crate) verifier: Option<Arc<Verifier>>,
}

impl Decoder {
    pub(crate) fn envelope(&self, delivery: Delivery) -> Envelope<AckToken> {
        let Delivery {
            topic,
            payload,
            ack,
            received,
            received_ms,
            ..
        } = delivery;
        let span = tracing::debug_span!(
            "message",
            device_id = tracing::field::Empty,
            session_id = tracing::field::Empty,
        );
        let _in_span = span.enter();
        let mut records = Batch::default();
        let reject = |records: &mut Batch,
                      device: Option<&str>,
                      payload: &[u8],
                      index: Option<usize>,
                      r: Rejection| {
            crate::metrics::rejected(r.code());
            // The device (and session, if known) come from the message span.
            tracing::debug!(topic = %topic, reason = %r, "message refused");
            records.dead_letters.push(DeadLetter::new(
                &topic,
                device,
                payload,
                index,
                &r,
                received_ms,
                self.dead_letter_payload_bytes,
            ));
        };
        let parsed = model::parse_topic(&topic);
        if let Ok(t) = &parsed {
            span.record("device_id", t.device_id);
        }
        let signature = match (&parsed, &self.verifier) {
            (Ok(t), Some(v)) => v.check(&topic, t.device_id, t.kind, &payload),
            _ => Ok(()),
        };
        match parsed {
            Ok(t) if signature.is_err() => {
                if let Err(r) = signature {
                    reject(&mut records, Some(t.device_id), &payload, None, r);
                }
            }
            Ok(t) if t.kind == TopicKind::Telemetry => {
                match decode_telemetry(t.device_id, &payload, received_ms, &self.limits) {
                    Ok(decoded) => {
                        if let Some(point) = decoded.points.first() {
                            span.record("session_id", point.session.as_str());
                        }
                        records.points = decoded.points;
                        for bad in decoded.rejected {
                            reject(
                                &mut records,
                                Some(t.device_id),
                                bad.raw.as_bytes(),
                                Some(bad.index),
                                bad.rejection,
                            );
                        }
                    }
                    Err(r) => reject(&mut records, Some(t.device_id), &payload, None, r),
                }
            }
            Ok(t) if t.kind == TopicKind::Session => {
                match decode_session(t.device_id, &payload, received_ms, &self.limits) {
                    Ok(event) => {
                        span.record("session_id", event.session.as_str());
                        records.sessions.push(event);
                    }
                    Err(r) => reject(&mut records, Some(t.device_id), &payload, None, r),
                }
            }
            Ok(t) if t.kind == TopicKind::Events => {
                match decode_event(t.device_id, &payload, received_ms, &self.limits) {
                    Ok(event) => {
                        span.record("session_id", event.session.as_str());
                        records.events.push(event);
                    }
                    Err(r) => reject(&mut records, Some(t.device_id), &payload, None, r),
                }
            }
            // Only reachable if someone widens our subscription: keep it, say why.
            Ok(t) => reject(
                &mut records,
                Some(t.device_id),
                &payload,
                None,
                Rejection::BadTopic(topic.clone()),
            ),
            Err(ref r) => reject(&mut records, None, &payload, None, r.clone()),
        }
        if let Some(limiter) = &self.limiter {
            // Unparseable topics share one bucket: they cannot name a device.
            let device = parsed.as_ref().ok().map(|t| t.device_id);
            let cost = records.len();
            let verdict = limiter.admit(device.unwrap_or(""), cost, received);
            if verdict != Verdict::Admit {
                crate::metrics::shed(records.points.len());
                records = Batch::default();
            }
            if verdict == Verdict::ShedFirst {
                let points_per_sec = limiter.points_per_sec();
                tracing::warn!(
                    device_id = device,
                    points_per_sec,
                    "device over its flood limit: shedding its messages until it slows down"
                );
                reject(
                    &mut records,
                    device,
                    &payload,
                    None,
                    Rejection::RateLimited { points_per_sec },
                );
            }
        }
        Envelope {
            records,
            ack,
            received,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Instant;

    use super::*;

    fn decode(topic: &str, payload: &str) {
        let decoder = Decoder {
            limits: Limits::default(),
            dead_letter_payload_bytes: 1024,
            limiter: None,
            verifier: None,
        };
        decoder.envelope(Delivery {
            topic: topic.to_owned(),
            payload: payload.to_owned().into(),
            ack: None,
            received: Instant::now(),
            received_ms: 1_700_000_000_000,
            redelivered: false,
        });
    }

    #[test]
    fn a_refusal_is_logged_with_the_device_and_session_of_its_message() {
        let (logs, _capture) = testkit::CapturedLogs::start("debug");
        decode(
            "roasters/r-7/telemetry",
            r#"[{"session":"s-1","seq":1,"ts":1700000000000,"channels":{"bt":1}},
                {"session":"s-1","seq":"two","ts":1700000000000,"channels":{"bt":1}}]"#,
        );
        let line = logs.find("message refused").unwrap();
        assert_eq!(line["device_id"], "r-7", "{line}");
        assert_eq!(line["session_id"], "s-1", "{line}");

        let (logs, _capture) = testkit::CapturedLogs::start("debug");
        decode("roasters/r-8/session", "not json");
        let line = logs.find("message refused").unwrap();
        assert_eq!(line["device_id"], "r-8", "{line}");
        assert!(line.get("session_id").is_none(), "unknown yet: {line}");
    }
}
