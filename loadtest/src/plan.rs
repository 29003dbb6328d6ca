//! What a run publishes: which devices and sessions, how many points each, and when.

use std::time::Duration;

use tokio::sync::watch;

use crate::Error;

/// Largest frame accepted: ingestion's default `max_frame_points`.
pub const MAX_FRAME: u32 = 1000;

/// The fixed shape of one run. Every session gets the same number of points, so that a later
/// `check` can tell what was expected from the run id, the session count and one number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub run_id: String,
    /// Target points per second, over all sessions.
    pub rate: u64,
    pub sessions: u32,
    /// Points per telemetry message.
    pub frame: u32,
    pub messages_per_session: u64,
}

impl Plan {
    /// A plan for `rate` points/s during about `duration`. The total is rounded to a whole
    /// number of frames per session, so the run lasts [`Plan::planned_duration`], which may
    /// differ slightly from `duration`; the rate itself is kept exactly.
    pub fn new(
        run_id: &str,
        rate: u64,
        duration: Duration,
        sessions: u32,
        frame: u32,
    ) -> Result<Self, Error> {
        check_run_id(run_id)?;
        if rate == 0 {
            return Err(Error::Config("--rate must be at least 1 point/s".into()));
        }
        if sessions == 0 {
            return Err(Error::Config("--sessions must be at least 1".into()));
        }
        if !(1..=MAX_FRAME).contains(&frame) {
            return Err(Error::Config(format!(
                "--frame must be 1..={MAX_FRAME} points per message"
            )));
        }
        if duration.is_zero() {
            return Err(Error::Config("--duration must be positive".into()));
        }
        let wanted = rate as f64 * duration.as_secs_f64();
        let per_round = f64::from(sessions) * f64::from(frame);
        let messages_per_session = (wanted / per_round).round().max(1.0) as u64;
        Ok(Plan {
            run_id: run_id.to_owned(),
            rate,
            sessions,
            frame,
            messages_per_session,
        })
    }

    pub fn points_per_session(&self) -> u64 {
        self.messages_per_session * u64::from(self.frame)
    }

    pub fn total_points(&self) -> u64 {
        self.points_per_session() * u64::from(self.sessions)
    }

    pub fn total_messages(&self) -> u64 {
        self.messages_per_session * u64::from(self.sessions)
    }

    /// How long publishing takes when the schedule is kept.
    pub fn planned_duration(&self) -> Duration {
        Duration::from_secs_f64(self.total_points() as f64 / self.rate as f64)
    }

    pub fn device_id(&self, n: u32) -> String {
        device_id(&self.run_id, n)
    }

    pub fn session_id(&self, n: u32) -> String {
        session_id(&self.run_id, n)
    }

    /// The share of the connection that carries `sessions_here` of the sessions.
    pub fn share(&self, sessions_here: u32) -> Share {
        Share {
            sessions_here,
            sessions: self.sessions,
            frame: self.frame,
            total: self.messages_per_session * u64::from(sessions_here),
        }
    }

    /// Assigns session `n` to a connection: round-robin, so every connection carries an even
    /// share and sessions on one connection advance in lockstep.
    pub fn sessions_of_connection(&self, connection: u32, connections: u32) -> Vec<u32> {
        (0..self.sessions)
            .filter(|n| n % connections == connection)
            .collect()
    }
}

/// Device of session `n` in a run: the `lt-<run id>-` prefix lets verification select exactly
/// this run's rows.
pub fn device_id(run_id: &str, n: u32) -> String {
    format!("lt-{run_id}-{n}")
}

pub fn session_id(run_id: &str, n: u32) -> String {
    format!("{run_id}-s{n}")
}

/// SQL `LIKE` pattern matching every device of a run (run ids are alphanumeric, so the pattern
/// has no accidental wildcards).
pub fn device_pattern(run_id: &str) -> String {
    format!("lt-{run_id}-%")
}

/// A short random run id: 6 characters of `[a-z0-9]`.
pub fn new_run_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..6)
        .map(|_| char::from(ALPHABET[rand::random_range(0..ALPHABET.len())]))
        .collect()
}

/// Run ids end up in device ids (at most 64 characters) and in a `LIKE` pattern, hence the
/// narrow alphabet.
pub fn check_run_id(run_id: &str) -> Result<(), Error> {
    let ok = (1..=16).contains(&run_id.len())
        && run_id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "run id {run_id:?} must be 1-16 characters of [a-z0-9]"
        )))
    }
}

/// The global pace of a run: points due since the start, as a piecewise-linear function of
/// time. A fixed run has one segment; a ramp starts a new one at each stage (and a pause, rate
/// 0, while a backlog drains). Pacing is open-loop: what is due is computed from elapsed time,
/// never by sleeping per message, so timer granularity and a slow moment only delay messages
/// (they are caught up at the next tick) and never lower the average rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// When this segment started, since the start of the run.
    pub from: Duration,
    /// Points due when it started.
    pub points_before: u64,
    /// Points per second, over all sessions.
    pub rate: u64,
}

impl Segment {
    /// Points due `elapsed` after the start of the run: exact integer arithmetic, so no
    /// rounding accumulates over a long run.
    pub fn points_due(&self, elapsed: Duration) -> u64 {
        let since = elapsed.saturating_sub(self.from);
        let more = since.as_nanos() * u128::from(self.rate) / 1_000_000_000;
        self.points_before
            .saturating_add(u64::try_from(more).unwrap_or(u64::MAX))
    }
}

/// Sets the pace that the publishing connections follow.
#[derive(Debug)]
pub struct PaceControl {
    tx: watch::Sender<Segment>,
}

impl PaceControl {
    pub fn new(rate: u64) -> Self {
        let (tx, _) = watch::channel(Segment {
            from: Duration::ZERO,
            points_before: 0,
            rate,
        });
        PaceControl { tx }
    }

    /// What the connections watch.
    pub fn subscribe(&self) -> watch::Receiver<Segment> {
        self.tx.subscribe()
    }

    pub fn rate(&self) -> u64 {
        self.tx.borrow().rate
    }

    pub fn points_due(&self, elapsed: Duration) -> u64 {
        self.tx.borrow().points_due(elapsed)
    }

    /// From `elapsed` on, `rate` points/s; what was due until then stays due.
    pub fn set_rate(&self, elapsed: Duration, rate: u64) {
        self.tx.send_modify(|s| {
            *s = Segment {
                from: elapsed,
                points_before: s.points_due(elapsed),
                rate,
            }
        });
    }
}

/// One connection's share of the global pace: its sessions' part of the points due, in
/// messages, at most `total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    pub sessions_here: u32,
    pub sessions: u32,
    pub frame: u32,
    /// Messages this connection publishes in all (`u64::MAX`: until stopped).
    pub total: u64,
}

impl Share {
    /// Messages due when `points_due` points are due over all sessions.
    pub fn due(&self, points_due: u64) -> u64 {
        let due = u128::from(points_due) * u128::from(self.sessions_here)
            / (u128::from(self.sessions) * u128::from(self.frame));
        u64::try_from(due).unwrap_or(u64::MAX).min(self.total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    /// Messages due at `t` for the connection carrying `sessions_here` of a fixed-rate plan.
    fn due(plan: &Plan, sessions_here: u32, t: Duration) -> u64 {
        let pace = PaceControl::new(plan.rate);
        plan.share(sessions_here).due(pace.points_due(t))
    }

    #[test]
    fn the_whole_run_is_due_at_its_planned_end() {
        let plan = Plan::new("abc", 10_000, secs(60.0), 100, 1).unwrap();
        assert_eq!(plan.total_points(), 600_000);
        assert_eq!(plan.points_per_session(), 6000);
        let whole = |t| due(&plan, plan.sessions, t);
        assert_eq!(whole(Duration::ZERO), 0);
        assert_eq!(whole(Duration::from_micros(99)), 0);
        assert_eq!(whole(Duration::from_micros(100)), 1);
        assert_eq!(whole(Duration::from_millis(1)), 10);
        assert_eq!(whole(secs(1.0)), 10_000);
        assert_eq!(whole(Duration::from_micros(59_999_900)), 599_999);
        assert_eq!(whole(secs(60.0)), 600_000);
        assert_eq!(whole(secs(3600.0)), 600_000, "capped at the total");
        assert_eq!(plan.planned_duration(), secs(60.0));
    }

    #[test]
    fn connections_share_the_rate_by_their_sessions() {
        // 10 sessions over 3 connections: 4, 3, 3 sessions.
        let plan = Plan::new("abc", 1000, secs(10.0), 10, 1).unwrap();
        let shares: Vec<_> = (0..3).map(|c| plan.sessions_of_connection(c, 3)).collect();
        assert_eq!(shares[0], vec![0, 3, 6, 9]);
        assert_eq!(shares[1], vec![1, 4, 7]);
        let scheds: Vec<_> = shares.iter().map(|s| plan.share(s.len() as u32)).collect();
        let pace = PaceControl::new(plan.rate);
        // At any moment, the connections together have published what the whole run has.
        for ms in [0, 1, 7, 333, 1000, 5555, 9999, 10_000, 20_000] {
            let t = Duration::from_millis(ms);
            let sum: u64 = scheds.iter().map(|s| s.due(pace.points_due(t))).sum();
            let whole = due(&plan, 10, t);
            assert!(
                whole.abs_diff(sum) < 3,
                "at {ms} ms: whole {whole}, connections {sum}"
            );
        }
        assert_eq!(scheds.iter().map(|s| s.total).sum::<u64>(), 10_000);
    }

    #[test]
    fn frames_divide_the_message_rate() {
        let plan = Plan::new("abc", 10_000, secs(1.0), 10, 10).unwrap();
        assert_eq!(plan.total_messages(), 1000);
        assert_eq!(plan.total_points(), 10_000);
        assert_eq!(due(&plan, 10, secs(0.5)), 500);
    }

    #[test]
    fn totals_round_to_whole_frames_per_session() {
        // 2000/s × 5 s = 10 000 points over 3 sessions × 4 points: 833.3 → 833 messages each.
        let plan = Plan::new("abc", 2000, secs(5.0), 3, 4).unwrap();
        assert_eq!(plan.messages_per_session, 833);
        assert_eq!(plan.total_points(), 9996);
        // A tiny run still publishes one message per session.
        let tiny = Plan::new("abc", 1, Duration::from_millis(1), 5, 1).unwrap();
        assert_eq!(tiny.total_points(), 5);
    }

    #[test]
    fn refuses_bad_plans() {
        let d = secs(1.0);
        assert!(Plan::new("abc", 0, d, 1, 1).is_err());
        assert!(Plan::new("abc", 1, d, 0, 1).is_err());
        assert!(Plan::new("abc", 1, d, 1, 0).is_err());
        assert!(Plan::new("abc", 1, d, 1, MAX_FRAME + 1).is_err());
        assert!(Plan::new("abc", 1, Duration::ZERO, 1, 1).is_err());
        assert!(Plan::new("ABC", 1, d, 1, 1).is_err());
        assert!(Plan::new("a_b", 1, d, 1, 1).is_err());
        assert!(Plan::new("", 1, d, 1, 1).is_err());
    }

    #[test]
    fn ids_fit_the_contract() {
        let run = new_run_id();
        assert!(check_run_id(&run).is_ok(), "{run}");
        let longest = "z".repeat(16);
        assert!(model::valid_id(&device_id(&longest, u32::MAX)));
        assert!(model::valid_id(&session_id(&longest, u32::MAX)));
        assert_eq!(device_pattern("abc"), "lt-abc-%");
    }

    #[test]
    fn a_new_rate_continues_from_what_was_due() {
        let pace = PaceControl::new(1000);
        assert_eq!(pace.points_due(secs(2.0)), 2000);
        pace.set_rate(secs(2.0), 4000);
        assert_eq!(pace.points_due(secs(2.0)), 2000, "no jump at the change");
        assert_eq!(pace.points_due(secs(2.5)), 4000);
        // A pause: nothing more is due until the rate is raised again.
        pace.set_rate(secs(3.0), 0);
        assert_eq!(pace.points_due(secs(60.0)), 6000);
        assert_eq!(pace.rate(), 0);
        pace.set_rate(secs(60.0), 100);
        assert_eq!(pace.points_due(secs(61.0)), 6100);
        // An open-ended share (a ramp) follows the pace without a cap.
        let share = Share {
            sessions_here: 1,
            sessions: 4,
            frame: 2,
            total: u64::MAX,
        };
        assert_eq!(share.due(6100), 762);
    }
}
