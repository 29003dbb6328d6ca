//! The async runtime a service process runs on, sized by configuration (`[runtime]`).
//!
//! Why this is configurable at all: a multi-threaded Tokio runtime starts one worker per core,
//! and its idle workers park and wake as work is stolen between them. On a host whose cores are
//! shared with the broker and the database — the Compose stack, a small VM, this project's own
//! measurement machine — those wake-ups compete with the processes the service waits on. Measured
//! with the load harness (10,000 one-point messages/s, Mosquitto + PostgreSQL + ingestion +
//! harness on 2 cores, 30 s runs): publish→commit p95 70 ms with the default for both, 38 ms
//! with `worker_threads = 1` for ingestion alone, 7.7 ms with 1 for ingestion and harness;
//! ingestion's CPU 0.35 → 0.28 cores. Where the service has cores
//! of its own (a Kubernetes pod with a CPU request), the default (one worker per core) scales.

use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, Sources};

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Worker threads of the runtime; 0 (the default) is one per available core. 1 runs every
    /// task on one thread, which is the cheapest when the cores are shared with busy neighbours.
    pub worker_threads: usize,
}

impl RuntimeConfig {
    /// The `[runtime]` section alone, from the same sources as the service's configuration
    /// (file, `SIMCORP_RUNTIME_WORKER_THREADS`, flags): read before the runtime exists.
    pub fn load(sources: &Sources) -> Result<Self, ConfigError> {
        let figment = crate::config::figment::<Section>(sources)?;
        crate::config::section(&figment, "runtime")
    }

    /// A multi-threaded runtime (I/O and timers enabled) with the configured number of workers.
    pub fn build(&self) -> std::io::Result<tokio::runtime::Runtime> {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        if self.worker_threads > 0 {
            builder.worker_threads(self.worker_threads);
        }
        builder.enable_all().build()
    }
}

/// Everything a binary's `main` needs before it can run async code: the `[runtime]` section
/// from `sources`, and the runtime built from it.
pub fn start(sources: &Sources) -> Result<tokio::runtime::Runtime, RuntimeError> {
    Ok(RuntimeConfig::load(sources)?.build()?)
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("starting the async runtime: {0}")]
    Start(#[from] std::io::Error),
}

/// The shape `figment` is given so that `[runtime]` is a known section with its defaults.
#[derive(Debug, Default, Serialize)]
struct Section {
    runtime: RuntimeConfig,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_to_one_worker_per_core_and_reads_the_section() {
        assert_eq!(
            RuntimeConfig::load(&Sources::default())
                .unwrap()
                .worker_threads,
            0
        );
        let sources = Sources::default().set("runtime.worker_threads", 1);
        assert_eq!(RuntimeConfig::load(&sources).unwrap().worker_threads, 1);
        let runtime = RuntimeConfig { worker_threads: 1 }.build().unwrap();
        assert_eq!(runtime.metrics().num_workers(), 1);
    }
}
