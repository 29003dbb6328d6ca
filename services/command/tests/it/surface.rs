//! The HTTP surface as described, and the stream of state changes.

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::common::*;

/// Every operation the OpenAPI document describes is routed, and every route is described.
#[tokio::test]
async fn the_served_openapi_document_matches_the_routes() {
    if !require("surface::the_served_openapi_document_matches_the_routes") {
        return;
    }
    let platform = Platform::new().await;
    let app = platform.start(300, 30).await;
    let doc: Value = app.get("/openapi.json").await;
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    for (path, item) in paths {
        let concrete = path
            .replace("{id}", "nope")
            .replace("{device_id}", "nope")
            .replace("{key_id}", "nope");
        for method in ["get", "post"] {
            if item.get(method).is_none() || concrete == "/proposals/stream" {
                continue;
            }
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let (status, body) = call(&app, m, &concrete, Some(ADMIN), None).await;
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            assert!(
                !(status == StatusCode::NOT_FOUND && body.as_str() == Some("")),
                "{method} {path} is not routed"
            );
        }
    }
    for route in [
        "/openapi.json",
        "/proposals",
        "/proposals/stream",
        "/proposals/{id}",
        "/proposals/{id}/history",
        "/proposals/{id}/approve",
        "/proposals/{id}/reject",
        "/audit/verify",
        "/devices/{device_id}/keys",
        "/devices/{device_id}/keys/{key_id}/confirm",
        "/devices/{device_id}/keys/{key_id}/revoke",
        "/keys/command",
    ] {
        assert!(paths.contains_key(route), "{route} is not described");
    }
    let text = app.text("/metrics").await;
    testkit::promtool_check(&text);
    testkit::assert_every_type_has_help(&text);
    app.stop().await;
}

#[tokio::test]
async fn the_stream_tells_every_state_change() {
    if !require("surface::the_stream_tells_every_state_change") {
        return;
    }
    let platform = Platform::new().await;
    let app = platform.start(300, 30).await;
    let (status, _) = call(&app, Method::GET, "/proposals/stream", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let resp = app
        .http
        .get(app.url("/proposals/stream"))
        .bearer_auth(OPERATOR)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut resp = resp;

    let device = FakeDevice::connect(&platform.broker, "r-9").await;
    device.roasting("s-9", 40.0).await;
    let id = testkit::eventually(std::time::Duration::from_secs(10), "a proposal", || async {
        let (status, c) = propose(&app, OPERATOR, "r-9", "air", 35.0).await;
        (status == StatusCode::CREATED).then(|| c["id"].as_str().unwrap().to_owned())
    })
    .await;
    call(
        &app,
        Method::POST,
        &format!("/proposals/{id}/reject"),
        Some(APPROVER),
        None,
    )
    .await;
    let mut text = String::new();
    while !text.contains("\"state\":\"rejected\"") {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(10), resp.chunk())
            .await
            .expect("no event within 10 s")
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(text.contains("event: state"), "{text}");
    assert!(
        text.contains(&format!(
            "\"id\":\"{id}\",\"device_id\":\"r-9\",\"state\":\"proposed\""
        )),
        "{text}"
    );
    assert!(text.contains("\"actor\":\"anna\""), "{text}");
    drop(resp);
    app.stop().await;
}
