//! What a person watching the run sees: a progress bar on a terminal, a status line every
//! few seconds otherwise (CI logs, `2> file`), nothing in tests.

use std::io::Write as _;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The figures shown, refreshed once a second.
#[derive(Debug, Clone, Default)]
pub struct Status {
    pub elapsed: Duration,
    pub published: u64,
    pub acked: u64,
    /// Points published in the last second.
    pub rate: f64,
    /// p95 publish→commit of the last second.
    pub p95_ms: Option<f64>,
    /// E.g. "stage 3: 7810 points/s".
    pub stage: Option<String>,
}

impl Status {
    fn line(&self) -> String {
        let p95 = self
            .p95_ms
            .map_or_else(|| "–".into(), |v| format!("{v:.2} ms"));
        let stage = self
            .stage
            .as_ref()
            .map(|s| format!("{s} · "))
            .unwrap_or_default();
        format!(
            "{stage}published {} · acked {} · {:.0}/s · p95 {p95}",
            self.published, self.acked, self.rate
        )
    }
}

pub enum Progress {
    Bar(ProgressBar),
    /// Not a terminal: a line every `every`.
    Lines {
        every: Duration,
        last: Instant,
    },
    Silent,
}

impl Progress {
    /// A bar over `planned` (for a ramp, the longest it may take) when stderr is a terminal.
    pub fn new(enabled: bool, planned: Duration) -> Self {
        if !enabled {
            return Progress::Silent;
        }
        let bar = ProgressBar::with_draw_target(
            Some(planned.as_secs().max(1)),
            ProgressDrawTarget::stderr_with_hz(4),
        );
        if bar.is_hidden() {
            return Progress::Lines {
                every: Duration::from_secs(5),
                last: Instant::now(),
            };
        }
        // The template is a constant: it parses, or no bar is better than a failed run.
        if let Ok(style) = ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} s  {msg}",
        ) {
            bar.set_style(style);
        }
        bar.enable_steady_tick(Duration::from_millis(250));
        Progress::Bar(bar)
    }

    pub fn update(&mut self, status: &Status) {
        match self {
            Progress::Bar(bar) => {
                bar.set_position(status.elapsed.as_secs());
                bar.set_message(status.line());
            }
            Progress::Lines { every, last } => {
                if last.elapsed() >= *every {
                    *last = Instant::now();
                    let _ = writeln!(
                        std::io::stderr(),
                        "[loadtest] {:6.1} s  {}",
                        status.elapsed.as_secs_f64(),
                        status.line()
                    );
                }
            }
            Progress::Silent => {}
        }
    }

    /// A line above the bar (or on its own).
    pub fn say(&self, line: &str) {
        match self {
            Progress::Bar(bar) => bar.println(format!("[loadtest] {line}")),
            Progress::Lines { .. } => {
                let _ = writeln!(std::io::stderr(), "[loadtest] {line}");
            }
            Progress::Silent => {}
        }
    }

    pub fn finish(&self, status: &Status) {
        if let Progress::Bar(bar) = self {
            bar.set_message(status.line());
            bar.abandon();
        }
    }
}
