//! From an MQTT delivery to the records of one pipeline envelope.
//!
//! Every message produces an envelope, good or bad: a refused payload becomes a dead letter that
//! is stored (and only then acknowledged) like any point. So bad input is kept for inspection,
//! never crashes anything, and never holds up the good input queued behind it.

use model::{Batch, DeadLetter, Limits, Rejection, TopicKind, decode_session, decode_telemetry};
use mqtt::{AckToken, Delivery};
use pipeline::Envelope;

/// Decodes deliveries; cheap to clone into the subscriber's handler.
#[derive(Debug, Clone)]
pub(crate) struct Decoder {
    pub(crate) limits: Limits,
    pub(crate) dead_letter_payload_bytes: usize,
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
        let mut records = Batch::default();
        let reject = |records: &mut Batch,
                      device: Option<&str>,
                      payload: &[u8],
                      index: Option<usize>,
                      r: Rejection| {
            crate::metrics::rejected(r.code());
            tracing::debug!(topic = %topic, device_id = device, reason = %r, "message refused");
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
        match model::parse_topic(&topic) {
            Ok(t) if t.kind == TopicKind::Telemetry => {
                match decode_telemetry(t.device_id, &payload, received_ms, &self.limits) {
                    Ok(decoded) => {
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
                    Ok(event) => records.sessions.push(event),
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
            Err(r) => reject(&mut records, None, &payload, None, r),
        }
        Envelope {
            records,
            ack,
            received,
        }
    }
}
