//! Logs and traces: one `tracing` subscriber per process that writes logs (JSON lines, or text for
//! local runs) and, when `[otel] endpoint` is set, exports spans over OTLP/HTTP to a collector.
//!
//! Spans carry what a log line needs to be found again: `service` (the root span of each service,
//! [`service_span`]), `request_id` (every HTTP request, in [`crate::http`]), `device_id` and
//! `session_id` (ingestion's messages). A JSON log line lists every span it is in, with their
//! fields, so each line of a request carries its request id.
//!
//! Traces cross services through the W3C `traceparent` header: the kit's router joins an incoming
//! one, and [`trace_headers`] gives what an outgoing request must carry to stay in the same
//! trace.

use std::sync::Mutex;
use std::time::Duration;

use axum::http::{HeaderMap, Uri};
use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use serde::{Deserialize, Serialize};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer};

/// `[log]`: what is logged, and how.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `tracing` filter directives, e.g. `info` or `info,ingestion=debug`. Spans below this level
    /// are neither logged nor exported.
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Json,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line: what log collectors (Loki, CloudWatch, …) ingest.
    Json,
    /// Human-readable lines, for a developer's terminal.
    Text,
}

impl LogConfig {
    pub fn validate(&self) -> Result<(), String> {
        EnvFilter::try_new(&self.level)
            .map(|_| ())
            .map_err(|e| format!("log.level {:?}: {e}", self.level))
    }
}

/// `[otel]`: where spans are exported. Off unless `endpoint` is set (`SIMCORP_OTEL_ENDPOINT`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct OtelConfig {
    /// The collector's OTLP/HTTP address, e.g. `http://otel-collector:4318`; spans go to its
    /// `/v1/traces`. `None`: no exporter at all, so tracing costs what logging costs.
    pub endpoint: Option<String>,
    /// The share of new traces kept (0 to 1). A trace that arrives from a caller keeps the
    /// caller's decision, so a trace is never half recorded.
    pub sample_ratio: f64,
    /// Longest one export may take before it is given up (its spans are dropped).
    pub export_timeout_ms: u64,
}

impl Default for OtelConfig {
    fn default() -> Self {
        OtelConfig {
            endpoint: None,
            sample_ratio: 1.0,
            export_timeout_ms: 10_000,
        }
    }
}

impl OtelConfig {
    pub fn validate(&self) -> Result<(), String> {
        if let Some(endpoint) = &self.endpoint {
            traces_url(endpoint)?;
        }
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return Err(format!(
                "otel.sample_ratio must be between 0 and 1, not {}",
                self.sample_ratio
            ));
        }
        if self.export_timeout_ms == 0 {
            return Err("otel.export_timeout_ms must be at least 1".into());
        }
        Ok(())
    }
}

/// Where OTLP/HTTP wants traces: `<endpoint>/v1/traces`, unless the endpoint already says so.
fn traces_url(endpoint: &str) -> Result<String, String> {
    let invalid = |why: &str| {
        format!(
            "otel.endpoint {endpoint:?}: {why}; expected the OTLP/HTTP address of a collector, \
             e.g. http://otel-collector:4318"
        )
    };
    let uri: Uri = endpoint.parse().map_err(|_| invalid("not a URL"))?;
    match uri.scheme_str() {
        Some("http") => {}
        // The exporter's HTTP client is built without TLS: an https endpoint would fail every
        // export, long after start. A collector agent on the node (or a sidecar) is plain HTTP.
        Some("https") => {
            return Err(invalid(
                "https is not supported by this build (no TLS in the exporter); use http:// to a \
                 collector agent or sidecar",
            ));
        }
        _ => return Err(invalid("only http:// OTLP/HTTP endpoints are supported")),
    }
    if uri.authority().is_none() {
        return Err(invalid("no host"));
    }
    if uri.query().is_some() {
        return Err(invalid("a query string has no meaning here"));
    }
    let base = endpoint.trim_end_matches('/');
    Ok(if base.ends_with("/v1/traces") {
        base.to_owned()
    } else {
        format!("{base}/v1/traces")
    })
}

/// Why telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("configuration: {0}")]
    Invalid(String),
    #[error("setting up the OTLP exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    /// The subscriber is process-wide: a second service in the process cannot export elsewhere.
    #[error(
        "telemetry of this process is already set up with otel.endpoint {installed:?}, not \
         {requested:?}: every service of one process exports to the same place"
    )]
    AlreadyInstalled {
        installed: Option<String>,
        requested: Option<String>,
    },
    /// Someone else (a test, a library) installed a global subscriber first.
    #[error("another tracing subscriber is already installed, so spans cannot be exported")]
    ForeignSubscriber,
}

/// What [`init`] installed in this process, so a later call can tell whether it asks for the same.
struct Installed {
    endpoint: Option<String>,
    provider: Option<SdkTracerProvider>,
}

static INSTALLED: Mutex<Option<Installed>> = Mutex::new(None);

/// Installs the process's subscriber: logs per `log`, spans exported per `otel`, as
/// `service_name` (the OpenTelemetry `service.name`; `simcorp up` runs every service in one
/// process as "simcorp").
///
/// Only the first call in a process installs anything, which lets tests and the all-in-one
/// command start several services; a later call gets a guard of the same exporter, or an error if
/// it asks for another endpoint. Call [`TelemetryGuard::shutdown`] before the process exits, or
/// the last spans are lost.
pub fn init(
    log: &LogConfig,
    otel: &OtelConfig,
    service_name: &str,
) -> Result<TelemetryGuard, Error> {
    otel.validate().map_err(Error::Invalid)?;
    let mut installed = INSTALLED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(installed) = installed.as_ref() {
        if installed.endpoint != otel.endpoint {
            return Err(Error::AlreadyInstalled {
                installed: installed.endpoint.clone(),
                requested: otel.endpoint.clone(),
            });
        }
        return Ok(TelemetryGuard {
            provider: installed.provider.clone(),
        });
    }

    let provider = match &otel.endpoint {
        Some(endpoint) => Some(provider(endpoint, otel, service_name)?),
        None => None,
    };
    let filter = EnvFilter::try_new(&log.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let exporter = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("simcorp"))
            .with_filter(filter_fn(|meta| {
                // A service's root span lasts as long as the process: as a parent it would make
                // one endless trace of everything the service does. Requests and messages are
                // roots of their own traces instead (or children of their caller's).
                let service_root = meta.is_span() && is_service_span(meta);
                !service_root && !meta.target().starts_with("opentelemetry")
            }))
    });
    let installed_ok = tracing_subscriber::registry()
        .with(filter)
        .with(fmt_layer(log, std::io::stderr))
        .with(exporter)
        .try_init()
        .is_ok();
    if !installed_ok && provider.is_some() {
        return Err(Error::ForeignSubscriber);
    }
    *installed = Some(Installed {
        endpoint: otel.endpoint.clone(),
        provider: provider.clone(),
    });
    Ok(TelemetryGuard { provider })
}

fn provider(
    endpoint: &str,
    otel: &OtelConfig,
    service_name: &str,
) -> Result<SdkTracerProvider, Error> {
    let url = traces_url(endpoint).map_err(Error::Invalid)?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url)
        .with_timeout(Duration::from_millis(otel.export_timeout_ms))
        .build()?;
    let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(otel.sample_ratio)));
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service_name.to_owned())
        .build();
    // The batch processor queues spans (dropping them when its queue is full, never making the
    // caller wait) and exports from a thread of its own: the Tokio runtime never blocks on it.
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(sampler)
        .with_resource(resource)
        .build())
}

/// The log layer, writing to `writer`: what [`init`] installs, and what tests of log lines use.
pub fn fmt_layer<S, W>(log: &LogConfig, writer: W) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_span_events(FmtSpan::NONE);
    match log.format {
        // Every span of the line, not only the innermost: a span opened inside a request must not
        // hide the request's id.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(true)
            .boxed(),
        LogFormat::Text => builder.compact().boxed(),
    }
}

/// Flushes and stops the span exporter [`init`] set up. The exporter belongs to the process, so
/// every guard stops the same one: keep one, the one of whoever runs the process.
#[derive(Debug)]
#[must_use = "without shutdown the last spans are lost"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Exports every finished span now (blocking up to `otel.export_timeout_ms`): for tests
    /// that wait for spans to arrive.
    pub fn flush(&self) {
        if let Some(provider) = &self.provider
            && let Err(e) = provider.force_flush()
        {
            tracing::warn!(error = %e, "exporting spans failed");
        }
    }

    /// Exports what is left and stops the exporter. Waits on a blocking thread, so it may be
    /// awaited on any runtime.
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        let stopped = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        match stopped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "stopping the span exporter"),
            Err(e) => tracing::warn!(error = %e, "stopping the span exporter panicked"),
        }
    }
}

const SERVICE_SPAN: &str = "service";

fn is_service_span(meta: &tracing::Metadata<'_>) -> bool {
    meta.name() == SERVICE_SPAN && meta.target() == module_path!()
}

/// The root span of service `name`: every log line of the service, and of its tasks and
/// requests, carries `service = name`. Logged, never exported (see [`init`]).
pub fn service_span(name: &'static str) -> tracing::Span {
    tracing::info_span!(target: module_path!(), SERVICE_SPAN, service = name)
}

/// Makes `span` (just created, not entered yet) a child of the trace `headers` carry in a W3C
/// `traceparent`, if any. Without one, or with exporting off, nothing changes.
pub fn join_remote_trace(span: &tracing::Span, headers: &HeaderMap) {
    let propagator = TraceContextPropagator::new();
    let parent = propagator.extract(&HeaderExtractor(headers));
    if parent.span().span_context().is_valid() {
        // Fails only when exporting is off or the span is disabled: nothing to join then.
        let _ = span.set_parent(parent);
    }
}

/// The headers (`traceparent`, `tracestate`) an outgoing HTTP request needs to continue the
/// current trace in the service it calls: `client.get(url).headers(kit::telemetry::trace_headers())`.
/// Empty when exporting is off.
pub fn trace_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    let context = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&context, &mut HeaderInjector(&mut headers));
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn otel_settings_are_checked() {
        let check = |endpoint: &str, ratio: f64| {
            OtelConfig {
                endpoint: Some(endpoint.to_owned()),
                sample_ratio: ratio,
                ..OtelConfig::default()
            }
            .validate()
        };
        assert_eq!(check("http://collector:4318", 0.5), Ok(()));
        assert_eq!(OtelConfig::default().validate(), Ok(()));
        for (endpoint, ratio, expected) in [
            ("collector:4318", 1.0, "only http://"),
            ("grpc://collector:4317", 1.0, "only http://"),
            ("https://collector:4318", 1.0, "https is not supported"),
            ("http://", 1.0, "not a URL"),
            ("http://collector:4318", 1.5, "between 0 and 1"),
            ("http://collector:4318", f64::NAN, "between 0 and 1"),
        ] {
            let err = check(endpoint, ratio).unwrap_err();
            assert!(err.contains(expected), "{endpoint} {ratio}: {err}");
        }
    }

    #[test]
    fn traces_go_to_the_otlp_traces_path() {
        for (endpoint, expected) in [
            ("http://c:4318", "http://c:4318/v1/traces"),
            ("http://c:4318/", "http://c:4318/v1/traces"),
            ("http://c:4318/v1/traces", "http://c:4318/v1/traces"),
            ("http://c/otlp", "http://c/otlp/v1/traces"),
        ] {
            assert_eq!(traces_url(endpoint).unwrap(), expected);
        }
    }

    #[test]
    fn without_exporting_no_trace_headers_are_made() {
        assert!(trace_headers().is_empty());
    }
}
