//! The load drill (`SIMCORP_DRILLS=1`, rerunnable): 1000 proposals a minute proposed, approved
//! and executed against simulated devices that verify nothing but acknowledge everything, then
//! the API's p95, propose→acked p95, and how many commands were lost or executed twice.
//! `SIMCORP_COMMANDS_LOAD_SECS` (default 60) and `SIMCORP_COMMANDS_LOAD_PER_MIN` (default 1000).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use tokio_util::sync::CancellationToken;

use crate::common::*;

fn p95(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 * 0.95).ceil() as usize).clamp(1, v.len()) - 1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_commands_a_minute_are_executed_once_each() {
    if !testkit::drill("commands_load")
        || !require("drill::thousand_commands_a_minute_are_executed_once_each")
    {
        return;
    }
    let secs: u64 = std::env::var("SIMCORP_COMMANDS_LOAD_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let per_min: u64 = std::env::var("SIMCORP_COMMANDS_LOAD_PER_MIN")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let platform = Platform::new().await;
    let app = Arc::new(
        platform
            .start_with(300, 30, |c| {
                // The drill measures the pipeline, not the rate limit of one roaster.
                for l in [
                    &mut c.command.limits.default.gas,
                    &mut c.command.limits.default.air,
                    &mut c.command.limits.default.drum,
                ] {
                    l.max_rate_per_min = 1e9;
                }
                // The devices publish one point, at the start.
                c.command.current_value_max_age_secs = 3600;
            })
            .await,
    );
    let devices = 20;
    let seen = Arc::new(Mutex::new(HashMap::<String, u32>::new()));
    let stop = CancellationToken::new();
    let mut servers = Vec::new();
    for d in 0..devices {
        let id = format!("load-{d}");
        let device = FakeDevice::connect(&platform.broker, &id).await;
        assert_eq!(device.register(&app, "k1").await.0, StatusCode::CREATED);
        device.roasting("s-load", 50.0).await;
        servers.push(device.serve_acks("k1", seen.clone(), stop.clone()));
    }
    testkit::eventually(
        Duration::from_secs(10),
        "the devices to be seen",
        || async {
            (propose(
                &app,
                OPERATOR,
                &format!("load-{}", devices - 1),
                "gas",
                200.0,
            )
            .await
            .1["reason"]
                == "out_of_range")
                .then_some(())
        },
    )
    .await;

    let total = per_min * secs / 60;
    let gap = Duration::from_secs_f64(60.0 / per_min as f64);
    let api_ms = Arc::new(Mutex::new(Vec::new()));
    let ids = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let mut tasks = Vec::new();
    let mut tick = tokio::time::interval(gap);
    for i in 0..total {
        tick.tick().await;
        let (app, api_ms, ids) = (app.clone(), api_ms.clone(), ids.clone());
        tasks.push(tokio::spawn(async move {
            let device = format!("load-{}", i % devices);
            let control = ["gas", "air", "drum"][(i / devices % 3) as usize];
            let base = [50.0, 30.0, 60.0][(i / devices % 3) as usize];
            let value = base + if i % 2 == 0 { 5.0 } else { 10.0 };
            let t = Instant::now();
            let (status, c) = propose(&app, OPERATOR, &device, control, value).await;
            api_ms
                .lock()
                .unwrap()
                .push(t.elapsed().as_secs_f64() * 1000.0);
            assert_eq!(status, StatusCode::CREATED, "{c}");
            let id = c["id"].as_str().unwrap().to_owned();
            let t = Instant::now();
            let (status, _) = call(
                &app,
                Method::POST,
                &format!("/proposals/{id}/approve"),
                Some(APPROVER),
                None,
            )
            .await;
            api_ms
                .lock()
                .unwrap()
                .push(t.elapsed().as_secs_f64() * 1000.0);
            assert_eq!(status, StatusCode::OK);
            ids.lock().unwrap().push(id);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let ids = ids.lock().unwrap().clone();
    testkit::eventually(
        Duration::from_secs(60),
        "every command to be acked",
        || async {
            let (_, acked) = call(
                &app,
                Method::GET,
                "/proposals?state=acked&limit=1000",
                Some(OPERATOR),
                None,
            )
            .await;
            let n = acked.as_array().map_or(0, |a| a.len());
            (n >= ids.len().min(1000)).then_some(())
        },
    )
    .await;
    let mut e2e = Vec::new();
    let mut lost = 0;
    for id in &ids {
        let (_, c) = call(
            &app,
            Method::GET,
            &format!("/proposals/{id}"),
            Some(OPERATOR),
            None,
        )
        .await;
        if c["state"] == "acked" {
            e2e.push(
                (c["finished_ms"].as_i64().unwrap() - c["created_ms"].as_i64().unwrap()) as f64,
            );
        } else {
            lost += 1;
        }
    }
    stop.cancel();
    let twice = seen.lock().unwrap().values().filter(|n| **n > 1).count();
    let report = format!(
        "commands load: {} proposals in {:.1} s ({per_min}/min asked) over {devices} devices; API p95 {:.1} ms; propose→acked p95 {:.0} ms; lost {lost}; twice {twice}",
        ids.len(),
        started.elapsed().as_secs_f64(),
        p95(api_ms.lock().unwrap().clone()),
        p95(e2e),
    );
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "\n{report}\n");
    assert_eq!((lost, twice), (0, 0), "{report}");
    let (_, v) = call(&app, Method::GET, "/audit/verify", Some(ADMIN), None).await;
    assert_eq!(v["ok"], true, "{v}");
}
