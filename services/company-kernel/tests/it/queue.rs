use std::time::Duration;

use company_kernel::CompanyKernel;
use reqwest::StatusCode;
use serde_json::{Value, json};
use testkit::{Server, TestService};

async fn kernel(postgres: bool) -> TestService<CompanyKernel> {
    let spawn = testkit::spawn::<CompanyKernel>()
        .set("company_kernel.backoff_base_ms", 50)
        .set("company_kernel.backoff_max_ms", 200)
        .set("company_kernel.sweep_interval_ms", 50);
    if postgres {
        spawn.postgres().await.start().await
    } else {
        spawn.start().await
    }
}

async fn post(k: &TestService<CompanyKernel>, path: &str, body: Value) -> (StatusCode, Value) {
    let resp = reqwest::Client::new()
        .post(k.url(path))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn claim(
    k: &TestService<CompanyKernel>,
    worker: &str,
    lease_secs: u64,
) -> Option<(String, String)> {
    let (status, v) = post(
        k,
        "/missions/claim",
        json!({"worker": worker, "kinds": ["report"], "lease_secs": lease_secs}),
    )
    .await;
    match status {
        StatusCode::OK => Some((
            v["mission"]["id"].as_str().unwrap().to_owned(),
            v["lease_token"].as_str().unwrap().to_owned(),
        )),
        StatusCode::NO_CONTENT => None,
        other => panic!("claim: {other} {v}"),
    }
}

async fn the_queue_hands_out_each_mission_once_and_keeps_its_story(postgres: bool) {
    let k = kernel(postgres).await;
    // Submitted twice under one key: one mission.
    let report = json!({"kind": "report", "payload": {"session": "roast-1"}, "idempotency_key": "report:roast-1"});
    let (status, first) = post(&k, "/missions", report.clone()).await;
    assert_eq!(
        (status, first["created"].as_bool()),
        (StatusCode::CREATED, Some(true)),
        "{first}"
    );
    let (status, again) = post(&k, "/missions", report).await;
    assert_eq!(
        (status, again["created"].as_bool()),
        (StatusCode::OK, Some(false))
    );
    assert_eq!(again["mission"]["id"], first["mission"]["id"]);
    assert_eq!(first["mission"]["payload"], json!({"session": "roast-1"}));
    let (_, urgent) = post(
        &k,
        "/missions",
        json!({"kind": "report", "priority": 10, "payload": {"session": "roast-2"}}),
    )
    .await;

    // By priority: the urgent one first.
    let (id, token) = claim(&k, "w-1", 30).await.unwrap();
    assert_eq!(id, urgent["mission"]["id"].as_str().unwrap());
    let (status, _) = post(
        &k,
        &format!("/missions/{id}/heartbeat"),
        json!({"lease_token": token}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = post(
        &k,
        &format!("/missions/{id}/complete"),
        json!({"lease_token": "not-mine", "result": {}}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, done) = post(
        &k,
        &format!("/missions/{id}/complete"),
        json!({"lease_token": token, "result": {"report": "r-2"}}),
    )
    .await;
    assert_eq!(
        (status, done["state"].as_str()),
        (StatusCode::OK, Some("done"))
    );
    let (status, _) = post(
        &k,
        &format!("/missions/{id}/complete"),
        json!({"lease_token": token}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "finished once");

    // The other fails once, then its worker goes silent: retried each time, then dead.
    let (id, token) = claim(&k, "w-1", 30).await.unwrap();
    assert_eq!(id, first["mission"]["id"].as_str().unwrap());
    let (_, failed) = post(
        &k,
        &format!("/missions/{id}/fail"),
        json!({"lease_token": token, "reason": "renderer crashed"}),
    )
    .await;
    assert_eq!(failed["state"], "queued", "{failed}");
    let (id2, _silent) = testkit::eventually(
        Duration::from_secs(10),
        "the retry after its backoff",
        || async { claim(&k, "w-2", 1).await },
    )
    .await;
    assert_eq!(id2, id);
    // w-2 never heartbeats: its lease runs out and the mission goes back to the queue.
    let (_, token3) = testkit::eventually(
        Duration::from_secs(10),
        "the retry after the lease expired",
        || async { claim(&k, "w-3", 30).await },
    )
    .await;
    let (_, dead) = post(
        &k,
        &format!("/missions/{id}/fail"),
        json!({"lease_token": token3, "reason": "no such session"}),
    )
    .await;
    assert_eq!(dead["state"], "queued", "attempt 3 of 5: {dead}");

    let m: Value = k.get(&format!("/missions/{id}")).await;
    assert_eq!(
        (m["state"].as_str(), m["attempts"].as_i64()),
        (Some("queued"), Some(3)),
        "{m}"
    );
    let story: Vec<(String, String)> = m["attempts_made"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["worker"].as_str().unwrap().to_owned(),
                a["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        story,
        [
            ("w-1".into(), "failed".into()),
            ("w-2".into(), "lease_expired".into()),
            ("w-3".into(), "failed".into())
        ]
    );
    let done: Vec<Value> = k.get("/missions?state=done").await;
    assert_eq!(done.len(), 1);
    assert_eq!(done[0]["result"], json!({"report": "r-2"}));

    let metrics = k.get_text("/metrics").await.1;
    testkit::promtool_check(&metrics);
    for line in [
        "simcorp_company_kernel_missions_submitted_total{created=\"false\"} 1",
        "simcorp_company_kernel_attempts_ended_total{outcome=\"lease_expired\"} 1",
        "simcorp_company_kernel_attempts_ended_total{outcome=\"done\"} 1",
    ] {
        assert!(metrics.contains(line), "want {line} in\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn on_postgres_the_queue_hands_out_each_mission_once_and_keeps_its_story() {
    if !testkit::require(
        Server::Postgres,
        "on_postgres_the_queue_hands_out_each_mission_once",
    ) {
        return;
    }
    the_queue_hands_out_each_mission_once_and_keeps_its_story(true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn on_sqlite_the_queue_hands_out_each_mission_once_and_keeps_its_story() {
    the_queue_hands_out_each_mission_once_and_keeps_its_story(false).await;
}

#[tokio::test]
async fn malformed_requests_are_refused_with_a_reason() {
    let k = kernel(false).await;
    for (path, body, want) in [
        ("/missions", json!({"kind": "no spaces"}), "kind"),
        (
            "/missions",
            json!({"kind": "report", "colour": "red"}),
            "colour",
        ),
        (
            "/missions/claim",
            json!({"worker": "w", "kinds": []}),
            "kinds",
        ),
        (
            "/missions/claim",
            json!({"worker": "w", "kinds": ["report"], "lease_secs": 0}),
            "lease_secs",
        ),
    ] {
        let (status, v) = post(&k, path, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {v}");
        assert!(v.to_string().contains(want), "{path}: {v}");
    }
    let (status, _) = post(
        &k,
        "/missions/mis-none/fail",
        json!({"lease_token": "t", "reason": "x"}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = k.get_text("/missions/mis-none").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
