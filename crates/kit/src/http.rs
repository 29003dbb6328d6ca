//! The ops HTTP surface shared by all services, serving, and the API error type.
//!
//! `/health` answers while the process can serve HTTP (liveness: restart me if this fails).
//! `/ready` answers 200 only while every *required* dependency answers (readiness: send me
//! traffic); optional dependencies (e.g. a cache whose loss only degrades) are reported but do
//! not fail it. `/metrics` is Prometheus text.
//!
//! Every request, to the API or the ops endpoints, runs in a `request` span carrying its
//! `request_id` (the caller's `x-request-id`, or a new UUID, and returned in the response's
//! `x-request-id`), so every log line of the request names it. A W3C `traceparent` from the
//! caller makes the span part of the caller's trace.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use tower_http::timeout::TimeoutLayer;
use tracing::Instrument as _;

type Probe = Arc<dyn Fn() -> bool + Send + Sync>;
type MetricsExtra = Arc<dyn Fn(&mut String) + Send + Sync>;

/// The readiness checks of one service. Cheap to clone; components register a probe (a fast,
/// non-blocking closure over state they keep current) when they start.
#[derive(Clone, Default)]
pub struct Readiness {
    checks: Arc<Mutex<Vec<(String, bool, Probe)>>>,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readiness")
            .field("report", &self.report())
            .finish()
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ReadyReport {
    pub ready: bool,
    pub checks: BTreeMap<String, CheckReport>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CheckReport {
    pub ok: bool,
    pub required: bool,
}

impl Readiness {
    /// A dependency without which the service must not receive traffic.
    pub fn require(&self, name: &str, probe: impl Fn() -> bool + Send + Sync + 'static) {
        self.add(name, true, Arc::new(probe));
    }

    /// A dependency whose loss degrades the service; reported, never failing readiness.
    pub fn observe(&self, name: &str, probe: impl Fn() -> bool + Send + Sync + 'static) {
        self.add(name, false, Arc::new(probe));
    }

    fn add(&self, name: &str, required: bool, probe: Probe) {
        if let Ok(mut checks) = self.checks.lock() {
            checks.retain(|(n, _, _)| n != name);
            checks.push((name.to_owned(), required, probe));
        }
    }

    pub fn report(&self) -> ReadyReport {
        let checks: Vec<(String, bool, Probe)> = match self.checks.lock() {
            Ok(c) => c.clone(),
            Err(_) => Vec::new(),
        };
        let mut report = ReadyReport {
            ready: true,
            checks: BTreeMap::new(),
        };
        for (name, required, probe) in checks {
            let ok = probe();
            report.ready &= ok || !required;
            report.checks.insert(name, CheckReport { ok, required });
        }
        report
    }
}

/// What the ops endpoints of one service need.
#[derive(Clone)]
pub struct Ops {
    /// Service name, the `service` label of HTTP metrics.
    pub service: &'static str,
    pub readiness: Readiness,
    /// Extra exposition text (e.g. HDR latency histograms) appended to `/metrics`.
    pub extra_metrics: Vec<MetricsExtra>,
    started: Instant,
}

impl std::fmt::Debug for Ops {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ops")
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl Ops {
    pub fn new(service: &'static str, readiness: Readiness) -> Self {
        // Install the recorder now: metrics recorded before it exists are silently lost.
        crate::metrics::prometheus();
        Ops {
            service,
            readiness,
            extra_metrics: Vec::new(),
            started: Instant::now(),
        }
    }

    pub fn with_metrics(mut self, render: impl Fn(&mut String) + Send + Sync + 'static) -> Self {
        self.extra_metrics.push(Arc::new(render));
        self
    }
}

/// The header naming a request in logs, on the way in and on the way out.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Adds `/health`, `/ready`, `/metrics`, per-route request metrics, a request timeout (so a
/// slow client can never hold shutdown hostage) and a span per request (see the module
/// documentation) to a service's API router. Request spans are children of the span current
/// here (the service's root span, when the service's lifecycle builds the router).
pub fn with_ops(api: Router, ops: Ops, request_timeout: Duration) -> Router {
    let service = ops.service;
    let parent = tracing::Span::current();
    let ops_routes = Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics_text))
        .with_state(ops);
    api.merge(ops_routes)
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            record_request(service, req, next)
        }))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            request_timeout,
        ))
        // Outermost, so that a request that timed out still has its span and its id.
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            traced(parent.clone(), req, next)
        }))
}

async fn traced(parent: tracing::Span, req: Request, next: Next) -> Response {
    let request_id = request_id(req.headers());
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let name = match &route {
        Some(route) => format!("{method} {route}"),
        None => method.to_string(),
    };
    let span = tracing::info_span!(
        parent: &parent,
        "request",
        otel.name = name.as_str(),
        otel.kind = "server",
        request_id = %request_id,
        http.request.method = %method,
        http.route = route.as_deref(),
        url.path = req.uri().path(),
        http.response.status_code = tracing::field::Empty,
    );
    crate::telemetry::join_remote_trace(&span, req.headers());
    let mut response = next.run(req).instrument(span.clone()).await;
    span.record("http.response.status_code", response.status().as_u16());
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}

/// The caller's request id when it is a sane one, else a new one. The id goes into every log line
/// of the request: a long or binary one would be a way to flood or forge logs.
fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|id| (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

async fn health(State(ops): State<Ops>) -> impl IntoResponse {
    axum::Json(serde_json::json!({
        "status": "ok",
        "service": ops.service,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": ops.started.elapsed().as_secs(),
    }))
}

async fn ready(State(ops): State<Ops>) -> impl IntoResponse {
    let report = ops.readiness.report();
    let status = if report.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(report))
}

async fn metrics_text(State(ops): State<Ops>) -> impl IntoResponse {
    let mut text = crate::metrics::render();
    for extra in &ops.extra_metrics {
        extra(&mut text);
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
}

async fn record_request(service: &'static str, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let start = Instant::now();
    let response = next.run(req).await;
    crate::metrics::request(
        service,
        route,
        response.status().as_u16(),
        start.elapsed().as_secs_f64(),
    );
    response
}

/// Serves `router` on `listener` until `shutdown` resolves, then lets in-flight requests finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// The error of every JSON API: a status and a message safe to show to the caller.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    /// The request clashes with what exists (a name taken).
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    Unavailable(String),
    /// Details were logged where the error was turned into this; the caller sees none.
    #[error("internal error")]
    Internal,
}

impl ApiError {
    /// Logs `err` and hides it from the caller.
    pub fn internal(err: impl Display) -> Self {
        tracing::error!(error = %err, "request failed");
        ApiError::Internal
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (
            status,
            axum::Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use axum::body::Body;
    use tower::ServiceExt as _;

    use super::*;

    async fn get_text(router: &Router, path: &str) -> (StatusCode, String) {
        let resp = router
            .clone()
            .oneshot(Request::builder().uri(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn ready_follows_required_checks_only() {
        let readiness = Readiness::default();
        let db = Arc::new(AtomicBool::new(true));
        let cache = Arc::new(AtomicBool::new(false));
        let (d, c) = (db.clone(), cache.clone());
        readiness.require("postgres", move || d.load(Ordering::Relaxed));
        readiness.observe("redis", move || c.load(Ordering::Relaxed));
        let router = with_ops(
            Router::new(),
            Ops::new("test", readiness),
            Duration::from_secs(5),
        );

        let (status, body) = get_text(&router, "/ready").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(
            body.contains(r#""redis":{"ok":false,"required":false}"#),
            "{body}"
        );

        db.store(false, Ordering::Relaxed);
        let (status, _) = get_text(&router, "/ready").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);

        let (status, _) = get_text(&router, "/health").await;
        assert_eq!(status, StatusCode::OK);
    }

    /// Log lines, as the JSON format writes them, kept for the test to read.
    #[derive(Clone, Default)]
    struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for CapturedLogs {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl CapturedLogs {
        fn lines(&self) -> Vec<serde_json::Value> {
            let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
            text.lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        }
    }

    /// The request ids of the spans a log line is in.
    fn request_ids(line: &serde_json::Value) -> Vec<&str> {
        line["spans"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["request_id"].as_str())
            .collect()
    }

    #[tokio::test]
    async fn every_log_line_of_a_request_carries_its_request_id() {
        use tracing::Instrument as _;
        use tracing_subscriber::layer::SubscriberExt as _;

        let logs = CapturedLogs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_subscriber::EnvFilter::new("info"))
            .with(crate::telemetry::fmt_layer(
                &crate::telemetry::LogConfig::default(),
                move || writer.clone(),
            ));
        // This thread only: the test's runtime runs the router on it.
        let _subscriber = tracing::subscriber::set_default(subscriber);
        let api = Router::new().route(
            "/work",
            get(|| async {
                tracing::info!("working");
                async { tracing::warn!("deep inside") }
                    .instrument(tracing::info_span!("step", n = 1))
                    .await;
                ApiError::internal("it broke")
            }),
        );
        let router = with_ops(
            api,
            Ops::new("test", Readiness::default()),
            Duration::from_secs(5),
        );

        for (given, expected) in [
            (Some("req-42"), Some("req-42")),
            // Not taken as it is: it would let a caller write anything into the logs.
            (Some("a b"), None),
            (None, None),
        ] {
            let mut request = Request::builder().uri("/work");
            if let Some(id) = given {
                request = request.header("x-request-id", id);
            }
            let resp = router
                .clone()
                .oneshot(request.body(Body::empty()).unwrap())
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
            let returned = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
            match expected {
                Some(expected) => assert_eq!(returned, expected),
                None => assert!(uuid::Uuid::parse_str(&returned).is_ok(), "{returned}"),
            }

            let lines = logs.lines();
            let of_request: Vec<&serde_json::Value> = lines
                .iter()
                .filter(|l| request_ids(l).contains(&returned.as_str()))
                .collect();
            let messages: Vec<&str> = of_request
                .iter()
                .filter_map(|l| l["message"].as_str())
                .collect();
            assert_eq!(
                messages,
                ["working", "deep inside", "request failed"],
                "{lines:?}"
            );
            logs.0.lock().unwrap().clear();
        }
    }

    #[tokio::test]
    async fn metrics_are_prometheus_text() {
        let ops = Ops::new("test", Readiness::default()).with_metrics(|out| {
            out.push_str("# TYPE extra_total counter\nextra_total 3\n");
        });
        let router = with_ops(Router::new(), ops, Duration::from_secs(5));
        let _ = get_text(&router, "/health").await;
        let (status, body) = get_text(&router, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        let scrape =
            prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).unwrap();
        assert!(
            scrape.samples.iter().any(|s| s.metric == "extra_total"),
            "{body}"
        );
    }
}
