//! Reference profiles over HTTP: made from a sim-twin profile, a curve given as JSON or an
//! Artisan `.alog`; listed, got by id or name, deleted; and whatever is malformed or hostile
//! refused with a reason — on analytics' own SQLite file and on PostgreSQL alike.

use analytics::Analytics;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use testkit::{Server, TestService};

use crate::common::send;

const ALOG: &str = "roast_25-08-30_1650.alog";

fn alog_text() -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/roast-logs/skywalker")
        .join(ALOG);
    std::fs::read_to_string(path).unwrap()
}

async fn analytics(postgres: bool) -> TestService<Analytics> {
    let spawn = testkit::spawn::<Analytics>()
        .set("analytics.history_url", "")
        .set("analytics.max_import_bytes", 1_048_576);
    if postgres {
        spawn.postgres().await.start().await
    } else {
        spawn.start().await
    }
}

async fn import(
    app: &TestService<Analytics>,
    name: &str,
    body: impl Into<reqwest::Body>,
) -> (StatusCode, String) {
    send(
        Method::POST,
        app.url(&format!("/profiles/alog?name={name}")),
        "text/plain",
        body,
    )
    .await
}

fn kinds(profile: &Value) -> Vec<String> {
    profile["profile"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect()
}

async fn profiles_live_their_whole_life(postgres: bool) {
    let app = analytics(postgres).await;

    // Every built-in sim-twin profile is there from the start, for simulated roasters to name.
    let listed: Vec<Value> = app.get("/profiles").await;
    let names: Vec<&str> = listed.iter().map(|p| p["name"].as_str().unwrap()).collect();
    for builtin in sim_engine::builtin_profiles() {
        assert!(
            names.contains(&format!("sim-twin:{}", builtin.name).as_str()),
            "{names:?}"
        );
    }

    let (status, body) = app
        .post("/profiles", json!({"name": "house-medium", "from": {"sim_twin": {"profile": "medium", "batch_g": 4500}}}).to_string())
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let sim: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(sim["source"], "sim_twin");
    assert_eq!(
        kinds(&sim),
        ["charge", "turning_point", "dry_end", "fc_start", "drop"]
    );
    assert_eq!(sim["profile"]["points"][0]["t_ms"], 0, "aligned at CHARGE");

    let (status, body) = import(&app, "skywalker-0830", alog_text()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let alog: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(alog["source"], "alog");
    assert!(
        kinds(&alog).contains(&"fc_start".to_owned()),
        "the roaster's own marks: {:?}",
        kinds(&alog)
    );

    let curve = json!({"points": [{"t_ms": 0, "bt": 200.0, "et": 230.0}, {"t_ms": 60000, "bt": 120.0, "et": 220.0},
        {"t_ms": 600000, "bt": 205.0, "et": 240.0}], "events": [{"kind": "charge", "t_ms": 0}, {"kind": "drop", "t_ms": 600000}]});
    let (status, body) = app
        .post(
            "/profiles",
            json!({"name": "drawn", "from": {"profile": curve}}).to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let drawn: Value = serde_json::from_str(&body).unwrap();

    // A name is taken once.
    let (status, body) = import(&app, "drawn", alog_text()).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(body.contains("exists already"), "{body}");

    let by_name: Value = app.get("/profiles/skywalker-0830").await;
    let by_id: Value = app
        .get(&format!("/profiles/{}", alog["id"].as_str().unwrap()))
        .await;
    assert_eq!(by_name, by_id);
    assert_eq!(by_id["profile"], alog["profile"]);
    let listed: Vec<Value> = app.get("/profiles").await;
    assert_eq!(listed[0]["name"], "drawn", "newest first");
    assert!(
        listed.iter().all(|p| p.get("profile").is_none()),
        "listed without curves"
    );

    let (status, _) = app
        .delete(&format!("/profiles/{}", drawn["id"].as_str().unwrap()))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(app.status("/profiles/drawn").await, StatusCode::NOT_FOUND);
    let (status, _) = app.delete("/profiles/drawn").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread")]
async fn profiles_live_their_whole_life_on_sqlite() {
    if !testkit::require(
        Server::Mosquitto,
        "profiles_live_their_whole_life_on_sqlite",
    ) {
        return;
    }
    profiles_live_their_whole_life(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn profiles_live_their_whole_life_on_postgres() {
    let test = "profiles_live_their_whole_life_on_postgres";
    if !testkit::require(Server::Mosquitto, test) || !testkit::require(Server::Postgres, test) {
        return;
    }
    profiles_live_their_whole_life(true).await;
}

/// Each refusal: the status, and words of the reason the caller reads.
#[tokio::test(flavor = "multi_thread")]
async fn malformed_and_hostile_profiles_are_refused_with_a_reason() {
    if !testkit::require(
        Server::Mosquitto,
        "malformed_and_hostile_profiles_are_refused_with_a_reason",
    ) {
        return;
    }
    let app = analytics(false).await;
    let post = |body: Value| {
        let app = &app;
        async move { app.post("/profiles", body.to_string()).await }
    };
    let curve = |points: Value, events: Value| json!({"name": "bad", "from": {"profile": {"points": points, "events": events}}});
    let charge = json!([{"kind": "charge", "t_ms": 0}]);
    let many: Vec<Value> = (0..20_001)
        .map(|i| json!({"t_ms": i * 1000, "bt": 150.0}))
        .collect();
    let cases: Vec<(&str, Value, &str)> = vec![
        ("empty", curve(json!([]), charge.clone()), "has no point"),
        (
            "unsorted",
            curve(
                json!([{"t_ms": 5000, "bt": 150.0}, {"t_ms": 1000, "bt": 151.0}]),
                charge.clone(),
            ),
            "is not after the previous point",
        ),
        (
            "too hot",
            curve(
                json!([{"t_ms": 0, "bt": 150.0}, {"t_ms": 1000, "bt": 9000.0}]),
                charge.clone(),
            ),
            "°C",
        ),
        (
            "too many",
            curve(Value::Array(many), charge.clone()),
            "20000",
        ),
        (
            "event past the curve",
            curve(
                json!([{"t_ms": 0, "bt": 150.0}]),
                json!([{"kind": "charge", "t_ms": 0}, {"kind": "drop", "t_ms": 99000}]),
            ),
            "is outside the curve",
        ),
        (
            "unknown event",
            curve(
                json!([{"t_ms": 0, "bt": 150.0}]),
                json!([{"kind": "second_crack", "t_ms": 0}]),
            ),
            "unknown variant",
        ),
        (
            "unknown field",
            json!({"name": "bad", "from": {"profile": {"points": [], "events": []}}, "colour": "red"}),
            "unknown field",
        ),
        (
            "bad name",
            json!({"name": "no spaces please", "from": {"sim_twin": {"profile": "medium"}}}),
            "invalid profile name",
        ),
        (
            "unknown sim-twin profile",
            json!({"name": "x", "from": {"sim_twin": {"profile": "espresso-9000"}}}),
            "no sim-twin profile",
        ),
        (
            "impossible batch",
            json!({"name": "x", "from": {"sim_twin": {"profile": "medium", "batch_g": -1}}}),
            "batch_g",
        ),
        (
            "no session source",
            json!({"name": "x", "from": {"session": {"session": "nowhere"}}}),
            "no session",
        ),
    ];
    let mut wrong = Vec::new();
    for (what, body, reason) in cases {
        let (status, text) = post(body).await;
        if !status.is_client_error() || !text.contains(reason) {
            wrong.push(format!("{what}: {status} {text}"));
        }
    }
    // NaN is not JSON; a number too large for a float is refused by the parser.
    let (status, text) = app
        .post(
            "/profiles",
            r#"{"name":"x","from":{"profile":{"points":[{"t_ms":0,"bt":1e999}],"events":[]}}}"#,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");

    let text = alog_text();
    let cases: Vec<(&str, String, StatusCode, &str)> = vec![
        (
            "truncated",
            text[..text.len() / 2].to_owned(),
            StatusCode::BAD_REQUEST,
            "truncated",
        ),
        (
            "not a log",
            "hello".to_owned(),
            StatusCode::BAD_REQUEST,
            "not a usable .alog",
        ),
        (
            "wrong mode",
            text.replacen("'mode': 'C'", "'mode': 'K'", 1),
            StatusCode::BAD_REQUEST,
            "mode must be",
        ),
        (
            "NaN readings",
            "{'mode': 'C', 'timex': [0.0, 1.0], 'temp1': [float('nan'), 1.0], 'temp2': [1, 1]}"
                .to_owned(),
            StatusCode::BAD_REQUEST,
            "not a usable .alog",
        ),
        (
            "huge",
            "x".repeat(2 * 1_048_576),
            StatusCode::PAYLOAD_TOO_LARGE,
            "too large",
        ),
    ];
    for (what, body, want, reason) in cases {
        let (status, got) = import(&app, "bad-alog", body).await;
        if status != want || !got.contains(reason) {
            wrong.push(format!("{what}: {status} {got}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "not refused as specified:\n{}",
        wrong.join("\n")
    );
    let (status, got) = import(&app, "bad-alog", vec![0xff_u8, 0xfe, 0x00]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{got}");
    assert!(got.contains("UTF-8"), "{got}");
    // Nothing refused was stored.
    let listed: Vec<Value> = app.get("/profiles").await;
    assert!(
        listed
            .iter()
            .all(|p| !["bad", "bad-alog", "x"].contains(&p["name"].as_str().unwrap()))
    );
}

/// Every operation the OpenAPI document describes is one the service routes (an unrouted path
/// answers with an empty 404 or a 405), and every route is described.
#[tokio::test(flavor = "multi_thread")]
async fn the_served_openapi_document_matches_the_routes() {
    if !testkit::require(
        Server::Mosquitto,
        "the_served_openapi_document_matches_the_routes",
    ) {
        return;
    }
    let app = analytics(false).await;
    let doc: Value = app.get("/openapi.json").await;
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    for (path, item) in paths {
        let concrete = path.replace("{id}", "nope").replace("{session}", "nope");
        for method in ["get", "post", "put", "delete"] {
            if item.get(method).is_none() {
                continue;
            }
            if concrete == "/live" {
                // A stream: its headers are enough.
                let resp = reqwest::get(app.url("/live")).await.unwrap();
                assert_eq!(resp.headers()["content-type"], "text/event-stream");
                continue;
            }
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let (status, body) = send(m, app.url(&concrete), "application/json", "{}").await;
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            assert!(
                !(status == StatusCode::NOT_FOUND && body.is_empty()),
                "{method} {path} is not routed"
            );
        }
    }
    for route in [
        "/",
        "/openapi.json",
        "/profiles",
        "/profiles/alog",
        "/profiles/{id}",
        "/sessions",
        "/sessions/{session}",
        "/sessions/{session}/curve",
        "/sessions/{session}/summary",
        "/sessions/{session}/variance",
        "/sessions/{session}/predictions",
        "/sessions/{session}/reference",
        "/live",
    ] {
        assert!(paths.contains_key(route), "{route} is not described");
    }
    let text = app.text("/metrics").await;
    testkit::promtool_check(&text);
    testkit::assert_every_type_has_help(&text);
}
