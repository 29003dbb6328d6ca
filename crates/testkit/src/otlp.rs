//! A minimal OpenTelemetry collector for tests: it accepts OTLP/HTTP protobuf exports of spans
//! (`POST /v1/traces`, decoded with the OpenTelemetry project's own protocol definitions) and
//! keeps them for the test to inspect. No collector binary can be installed on the machines this
//! project runs on, and a mock of the exporter would test nothing of the wire format.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message as _;

/// At most this many spans are kept (the oldest go first): every test of a process exports here.
const KEPT: usize = 10_000;

/// One span as the receiver got it, with ids in the hex of W3C `traceparent`.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedSpan {
    /// The `service.name` of the exporting process.
    pub service: Option<String>,
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    /// `None` for the root of a trace.
    pub parent_span_id: Option<String>,
    /// `SpanKind` as OTLP numbers it (2: server, 3: client).
    pub kind: i32,
    /// Attributes as text (`"200"` for the integer 200).
    pub attributes: BTreeMap<String, String>,
}

impl ReceivedSpan {
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

type Spans = Arc<Mutex<VecDeque<ReceivedSpan>>>;

/// An OTLP/HTTP receiver on a port of its own on 127.0.0.1, served from a thread of its own (so
/// that it outlives any one test's runtime).
#[derive(Debug)]
pub struct OtlpReceiver {
    addr: SocketAddr,
    spans: Spans,
}

impl OtlpReceiver {
    /// Starts a receiver, for a service in another process to export to.
    pub fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let spans = Spans::default();
        let router = Router::new()
            .route("/v1/traces", post(receive))
            .with_state(spans.clone());
        std::thread::Builder::new()
            .name(format!("otlp-receiver-{}", addr.port()))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                    axum::serve(listener, router).await.unwrap();
                });
            })
            .unwrap();
        OtlpReceiver { addr, spans }
    }

    /// The receiver every service spawned in this process exports to ([`crate::spawn`] points
    /// `otel.endpoint` here): a process has one exporter, whichever test started first.
    pub fn shared() -> &'static OtlpReceiver {
        static SHARED: OnceLock<OtlpReceiver> = OnceLock::new();
        SHARED.get_or_init(OtlpReceiver::start)
    }

    /// What `otel.endpoint` should say to export here.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far (at most the last 10,000).
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.lock().unwrap().iter().cloned().collect()
    }

    /// Waits (at most 20 s) for a span that `matches`, flushing this process's exporter while it
    /// waits instead of sleeping through the batch interval.
    pub async fn wait_for(
        &self,
        what: &str,
        matches: impl Fn(&ReceivedSpan) -> bool,
    ) -> ReceivedSpan {
        let matches = &matches;
        crate::eventually(Duration::from_secs(20), what, || async move {
            if let Some(span) = self.spans.lock().unwrap().iter().find(|s| matches(s)) {
                return Some(span.clone());
            }
            crate::service::flush_spans().await;
            None
        })
        .await
    }
}

async fn receive(State(spans): State<Spans>, body: Bytes) -> impl IntoResponse {
    let request = match ExportTraceServiceRequest::decode(body) {
        Ok(request) => request,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let mut kept = spans.lock().unwrap();
    for resource_spans in request.resource_spans {
        let service = resource_spans.resource.and_then(|r| {
            r.attributes
                .into_iter()
                .find(|kv| kv.key == "service.name")
                .map(|kv| text(kv.value))
        });
        for span in resource_spans.scope_spans.into_iter().flat_map(|s| s.spans) {
            if kept.len() == KEPT {
                kept.pop_front();
            }
            kept.push_back(ReceivedSpan {
                service: service.clone(),
                name: span.name,
                trace_id: hex(&span.trace_id),
                span_id: hex(&span.span_id),
                parent_span_id: (!span.parent_span_id.is_empty())
                    .then(|| hex(&span.parent_span_id)),
                kind: span.kind,
                attributes: attributes(span.attributes),
            });
        }
    }
    (
        [(header::CONTENT_TYPE, "application/x-protobuf")],
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
        .into_response()
}

fn attributes(attributes: Vec<KeyValue>) -> BTreeMap<String, String> {
    attributes
        .into_iter()
        .map(|kv| (kv.key, text(kv.value)))
        .collect()
}

fn text(value: Option<AnyValue>) -> String {
    match value.and_then(|v| v.value) {
        Some(any_value::Value::StringValue(s)) => s,
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
