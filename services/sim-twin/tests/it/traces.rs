//! Traces of the running service, as a collector receives them over OTLP/HTTP
//! (`testkit::OtlpReceiver`, where every spawned service exports).

use reqwest::StatusCode;
use sim_twin::SimTwin;
use testkit::{OtlpReceiver, ReceivedSpan};
use tracing::Instrument as _;

/// 32 hex digits no other test uses, for a trace id.
fn fresh_trace_id() -> String {
    let random = testkit::unique_name("t");
    format!("0af7651916cd43dd{}", &random[random.len() - 16..])
}

#[tokio::test]
async fn a_request_joins_the_callers_trace_and_carries_its_request_id() {
    let app = testkit::spawn::<SimTwin>().start().await;
    let trace_id = fresh_trace_id();
    let caller_span_id = "b7ad6b7169203331";
    let resp = app
        .http
        .get(app.url("/profiles"))
        .header("traceparent", format!("00-{trace_id}-{caller_span_id}-01"))
        .header("x-request-id", "it-traces-1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["x-request-id"], "it-traces-1");

    let span = OtlpReceiver::shared()
        .wait_for("the request's span", |s| s.trace_id == trace_id)
        .await;
    assert_eq!(span.name, "GET /profiles");
    assert_eq!(span.parent_span_id.as_deref(), Some(caller_span_id));
    assert_eq!(span.kind, 2, "a server span: {span:?}");
    assert_eq!(span.service.as_deref(), Some("sim-twin"));
    assert_eq!(span.attribute("request_id"), Some("it-traces-1"));
    assert_eq!(span.attribute("http.route"), Some("/profiles"));
    assert_eq!(span.attribute("http.response.status_code"), Some("200"));
    app.stop().await;
}

#[tokio::test]
async fn a_request_without_a_caller_starts_a_trace_and_is_given_a_request_id() {
    let app = testkit::spawn::<SimTwin>().start().await;
    let resp = app.http.get(app.url("/health")).send().await.unwrap();
    let request_id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(request_id.len(), 36, "a UUID: {request_id}");

    let span = OtlpReceiver::shared()
        .wait_for("the request's span", |s| {
            s.attribute("request_id") == Some(request_id.as_str())
        })
        .await;
    assert_eq!(span.parent_span_id, None, "a root: {span:?}");
    assert_eq!(span.name, "GET /health");
    app.stop().await;
}

#[tokio::test]
async fn a_call_made_inside_a_span_continues_its_trace_in_the_service_called() {
    let app = testkit::spawn::<SimTwin>().start().await;
    let call = async {
        // What a service calling another does: the current trace goes with the request.
        let headers = kit::telemetry::trace_headers();
        let resp = app
            .http
            .get(app.url("/profiles"))
            .headers(headers.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        headers
    };
    let headers = call
        .instrument(tracing::info_span!("calling sim-twin"))
        .await;
    let traceparent = headers["traceparent"].to_str().unwrap().to_owned();
    let parts: Vec<&str> = traceparent.split('-').collect();
    let (trace_id, caller_span_id) = (parts[1], parts[2]);

    let server = OtlpReceiver::shared()
        .wait_for("the called service's span", |s| {
            s.trace_id == trace_id && s.name == "GET /profiles"
        })
        .await;
    assert_eq!(server.parent_span_id.as_deref(), Some(caller_span_id));
    let caller: ReceivedSpan = OtlpReceiver::shared()
        .wait_for("the caller's span", |s| s.span_id == caller_span_id)
        .await;
    assert_eq!(caller.name, "calling sim-twin");
    assert_eq!(caller.trace_id, trace_id);
    app.stop().await;
}
