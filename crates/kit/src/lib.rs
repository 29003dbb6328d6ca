//! The service kit: what every simcorp service has in common, so that a service crate contains
//! only its own domain.
//!
//! - [`config`]: one typed settings struct per service, loaded from defaults, an optional TOML
//!   file, `SIMCORP_<SECTION>_<KEY>` environment variables and `…_FILE` secrets, then validated.
//! - [`telemetry`]: logs as JSON lines via `tracing` (or human text for local runs), spans with
//!   the ids that find them again (service, request, device, session), and their export over
//!   OTLP/HTTP when `[otel] endpoint` is set; W3C trace context in and out of HTTP.
//! - [`http`]: the ops surface every service exposes — `GET /health`, `GET /ready` (driven by
//!   [`http::Readiness`] checks), `GET /metrics` (Prometheus text) — plus serving with a request
//!   timeout and graceful shutdown, and [`http::ApiError`], the one error type of all JSON APIs.
//! - [`metrics`]: the process-wide Prometheus recorder, the HTTP layer's metrics (the kit's only
//!   ones, `simcorp_http_*`), the process metrics, and exposition of HDR histograms and of
//!   counters their owners keep themselves.
//! - [`runtime`]: the Tokio runtime, sized by `[runtime] worker_threads`.
//! - [`service`]: the shape of every service — the [`service::Service`] trait, the one
//!   lifecycle ([`service::Lifecycle`]: readiness, tasks, HTTP, how it stops), the type-erased
//!   [`service::Entry`] registries hold, and the generic `main`.
//! - [`shutdown`]: SIGTERM/SIGINT as a future.
//!
//! Not here: anything about MQTT, storage or a particular service's API.

pub mod config;
pub mod http;
pub mod metrics;
pub mod runtime;
pub mod service;
pub mod shutdown;
pub mod telemetry;
