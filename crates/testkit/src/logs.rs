//! Log lines as the platform writes them (JSON, with every span of the line), captured for a test
//! to read.

use std::sync::{Arc, Mutex};

use kit::telemetry::{LogConfig, LogFormat};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt as _;

/// The JSON log lines written on this thread while the guard of [`CapturedLogs::start`] lives.
#[derive(Debug, Clone, Default)]
pub struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl CapturedLogs {
    /// Captures the log lines at `level` (`tracing` directives, e.g. `debug`) of this thread:
    /// synchronous code, or a current-thread runtime (`#[tokio::test]`'s default).
    pub fn start(level: &str) -> (CapturedLogs, tracing::subscriber::DefaultGuard) {
        let logs = CapturedLogs::default();
        let writer = logs.clone();
        let log = LogConfig {
            level: level.to_owned(),
            format: LogFormat::Json,
        };
        let subscriber = tracing_subscriber::registry()
            .with(EnvFilter::new(level))
            .with(kit::telemetry::fmt_layer(&log, move || writer.clone()));
        (logs, tracing::subscriber::set_default(subscriber))
    }

    /// Every line so far, parsed.
    pub fn lines(&self) -> Vec<serde_json::Value> {
        let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    /// The line whose message is `message`, with the fields of every span it is in merged into
    /// one object (innermost last), as a log query sees them.
    pub fn find(&self, message: &str) -> Option<serde_json::Value> {
        self.lines()
            .into_iter()
            .find(|l| l["message"] == message)
            .map(|line| {
                let mut fields = serde_json::Map::new();
                for span in line["spans"].as_array().into_iter().flatten() {
                    if let Some(span) = span.as_object() {
                        fields.extend(span.clone());
                    }
                }
                if let Some(event) = line.as_object() {
                    fields.extend(event.clone());
                }
                serde_json::Value::Object(fields)
            })
    }
}

impl std::io::Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
