//! The HTTP API over real HTTP, against the service's `run`.

use reqwest::StatusCode;
use serde_json::{Value, json};
use sim_engine::{Event, EventKind, Profile, RoastConfig, Sample, builtin_profile, simulate};

use sim_twin::SimTwin;

fn parse(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

#[tokio::test]
async fn simulate_a_builtin_profile_gives_the_engines_roast() {
    let app = testkit::spawn::<SimTwin>().start().await;
    let (status, body) = app
        .post(
            "/simulate",
            r#"{"profile": "light", "seed": 7, "batch_g": 3500, "sample_interval_ms": 500}"#,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let v = parse(&body);
    let expected = simulate(&RoastConfig {
        profile: builtin_profile("light").unwrap(),
        seed: 7,
        batch_g: 3500.0,
        sample_interval_ms: 500,
        ..RoastConfig::default()
    })
    .unwrap();
    let samples: Vec<Sample> = serde_json::from_value(v["samples"].clone()).unwrap();
    let events: Vec<Event> = serde_json::from_value(v["events"].clone()).unwrap();
    assert_eq!(samples, expected.samples);
    assert_eq!(events, expected.events);
    assert_eq!(v["profile"]["name"], "light");
    assert_eq!(v["config"]["seed"], 7);
    assert_eq!(v["config"]["moisture_pct"], 10.5, "defaults are filled in");
    assert_eq!(
        v["events"][1]["kind"], "turning_point",
        "kinds in snake_case"
    );

    // The same request, the same bytes.
    let (_, again) = app
        .post(
            "/simulate",
            r#"{"profile": "light", "seed": 7, "batch_g": 3500, "sample_interval_ms": 500}"#,
        )
        .await;
    assert_eq!(again, body);
    app.stop().await;
}

#[tokio::test]
async fn simulate_without_a_body_is_the_default_roast() {
    let app = testkit::spawn::<SimTwin>().start().await;
    let resp = app.http.post(app.url("/simulate")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let v: Value = resp.json().await.unwrap();
    let expected = simulate(&RoastConfig::default()).unwrap();
    assert_eq!(v["profile"]["name"], "medium");
    assert_eq!(
        v["samples"].as_array().unwrap().len(),
        expected.samples.len()
    );
    app.stop().await;
}

#[tokio::test]
async fn simulate_a_custom_profile() {
    let app = testkit::spawn::<SimTwin>().start().await;
    let profile = json!({
        "name": "house espresso",
        "steps": [
            {"at_s": 0, "gas": 85, "air": 30, "drum": 55},
            {"at_s": 200, "gas": 70, "air": 50, "drum": 55},
            {"at_s": 480, "gas": 55, "air": 65, "drum": 55}
        ],
        "drop_bt_c": 216,
        "max_duration_s": 1200
    });
    let (status, body) = app
        .post(
            "/simulate",
            json!({"profile": profile, "seed": 11}).to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let v = parse(&body);
    let echoed: Profile = serde_json::from_value(v["profile"].clone()).unwrap();
    assert_eq!(echoed, serde_json::from_value::<Profile>(profile).unwrap());
    let events: Vec<Event> = serde_json::from_value(v["events"].clone()).unwrap();
    let drop = events.last().unwrap();
    assert_eq!(drop.kind, EventKind::Drop);
    assert!(drop.bt >= 216.0, "{drop:?}");
    let samples: Vec<Sample> = serde_json::from_value(v["samples"].clone()).unwrap();
    assert_eq!(samples.last().unwrap().gas, 55.0);
    assert_eq!(samples.last().unwrap().air, 65.0);
    app.stop().await;
}

#[tokio::test]
async fn bad_input_is_a_400_with_the_reason() {
    let app = testkit::spawn::<SimTwin>()
        .set("sim_twin.max_samples", 5_000)
        .start()
        .await;
    let cases = [
        (
            r#"{"profile": "espresso"}"#,
            "unknown profile \"espresso\"; built-in profiles are light, medium, dark",
        ),
        (
            r#"{"profile": 3}"#,
            "profile must be a built-in profile's name or a profile object",
        ),
        (
            r#"{"profile": {"name": "x", "steps": []}}"#,
            "profile: missing field `drop_bt_c`",
        ),
        (
            r#"{"profile": {"name": "x", "steps": [{"at_s": 0, "gas": 50, "air": 50, "drum": 50}], "drop_bt_c": 210, "max_duration_s": 900, "colour": "red"}}"#,
            "unknown field `colour`",
        ),
        (
            r#"{"profile": {"name": "x", "steps": [{"at_s": 0, "gas": 150, "air": 50, "drum": 50}], "drop_bt_c": 210, "max_duration_s": 900}}"#,
            "step 0: gas 150 is not within 0..=100",
        ),
        (
            r#"{"profile": {"name": "x", "steps": [{"at_s": 0, "gas": 50, "air": 50, "drum": 50}], "drop_bt_c": 210, "max_duration_s": 7200}}"#,
            "max_duration_s 7200 is not within",
        ),
        (
            r#"{"sample_interval_ms": 50}"#,
            "sample_interval_ms 50 is not within 100..=60000",
        ),
        (
            r#"{"sample_interval_ms": 100}"#,
            "could produce up to 12002 samples",
        ),
        (r#"{"batch_g": -5}"#, "batch_g -5 is not within"),
        (
            r#"{"seed": -1}"#,
            "invalid request body: invalid value: integer `-1`",
        ),
        (r#"{"seeed": 1}"#, "unknown field `seeed`"),
        (r#"{"seed": 1"#, "invalid request body"),
        ("[]", "invalid request body"),
    ];
    for (body, expected) in cases {
        let (status, text) = app.post("/simulate", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {text}");
        let message = parse(&text)["error"].as_str().unwrap().to_owned();
        assert!(
            message.contains(expected),
            "{body}: {message:?} lacks {expected:?}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn profiles_are_listed() {
    let app = testkit::spawn::<SimTwin>().start().await;
    let (status, body) = app.get_text("/profiles").await;
    assert_eq!(status, StatusCode::OK);
    let profiles: Vec<Profile> = serde_json::from_str(&body).unwrap();
    assert_eq!(profiles, sim_engine::builtin_profiles());
    app.stop().await;
}

#[tokio::test]
async fn ops_endpoints_answer() {
    let app = testkit::spawn::<SimTwin>().start().await;
    let (status, body) = app.get_text("/health").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(parse(&body)["service"], "sim-twin");
    let (status, body) = app.get_text("/ready").await;
    assert_eq!(
        status,
        StatusCode::OK,
        "no dependencies: always ready: {body}"
    );
    let (status, _) = app.post("/simulate", "{}").await;
    assert_eq!(status, StatusCode::OK);
    let (status, metrics) = app.get_text("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        metrics.contains("simcorp_sim_twin_samples_total"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"simcorp_http_requests_total{service="sim-twin",route="/simulate",status="200"}"#
        ),
        "{metrics}"
    );
    app.stop().await;
}

/// `/metrics` after a simulation passes Prometheus' own checks, and every metric is described.
#[tokio::test]
async fn metrics_pass_promtool() {
    let app = testkit::spawn::<SimTwin>().start().await;
    let (status, _) = app.post("/simulate", "{}").await;
    assert_eq!(status, StatusCode::OK);
    let text = app.text("/metrics").await;
    testkit::promtool_check(&text);
    testkit::assert_every_type_has_help(&text);
    assert!(text.contains("simcorp_sim_twin_roasts_total 1"), "{text}");
    app.stop().await;
}
