//! The `simcorp` command, run as a developer or a container would run it.
#![allow(clippy::unwrap_used)] // In tests a panic is the assertion.

use std::process::Stdio;
use std::time::Duration;

use testkit::{Server, TestDatabase};
use tokio::process::{Child, Command};

struct Simcorp {
    child: Child,
    http: String,
}

/// Runs `simcorp <args>` with the given environment and waits for ingestion to be ready.
async fn start(args: &[&str], env: &[(&str, String)]) -> Simcorp {
    let http_port = testkit::free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_simcorp"));
    cmd.args(args)
        .env(
            "SIMCORP_INGESTION_HTTP_ADDR",
            format!("127.0.0.1:{http_port}"),
        )
        .env("SIMCORP_LOG_LEVEL", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().unwrap();
    let http = format!("http://127.0.0.1:{http_port}");
    let ready = format!("{http}/ready");
    testkit::eventually(Duration::from_secs(30), "simcorp to be ready", || {
        let ready = ready.clone();
        async move {
            reqwest::get(&ready)
                .await
                .ok()?
                .status()
                .is_success()
                .then_some(())
        }
    })
    .await;
    Simcorp { child, http }
}

impl Simcorp {
    async fn stop(self) -> String {
        let pid = self.child.id().unwrap().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .unwrap();
        let out = tokio::time::timeout(Duration::from_secs(30), self.child.wait_with_output())
            .await
            .expect("simcorp did not stop within 30 s of SIGTERM")
            .unwrap();
        assert!(out.status.success(), "simcorp exited with {}", out.status);
        String::from_utf8(out.stdout).unwrap()
    }
}

async fn command_the_demo_roaster(ingestion: &str) {
    let command = "http://127.0.0.1:3004";
    let http = reqwest::Client::new();
    let latest = format!("{ingestion}/devices/sim-bridge-1/latest");
    let gas = |latest: &serde_json::Value| latest["point"]["channels"]["gas"].as_f64();
    // Its current gas, from what it publishes; the command goes 10 points below it.
    let current = testkit::eventually(
        Duration::from_secs(30),
        "driver-bridge's roaster publishing",
        || {
            let latest = latest.clone();
            async move { gas(&reqwest::get(&latest).await.ok()?.json().await.ok()?) }
        },
    )
    .await;
    let target = (current - 10.0).max(0.0).round();
    let proposal: serde_json::Value = testkit::eventually(
        Duration::from_secs(30),
        "the command service to take the proposal",
        || {
            let http = http.clone();
            async move {
                let r = http
                    .post(format!("{command}/proposals"))
                    .bearer_auth("demo-operator")
                    .json(
                        &serde_json::json!({"device_id": "sim-bridge-1", "control": "gas",
                        "value": target, "reason": "slow the rise"}),
                    )
                    .send()
                    .await
                    .ok()?;
                // 422 until it has seen the roaster's session and current gas.
                (r.status() == 201).then_some(r.json().await.ok()?)
            }
        },
    )
    .await;
    let id = proposal["id"].as_str().unwrap().to_owned();
    let approved = http
        .post(format!("{command}/proposals/{id}/approve"))
        .bearer_auth("demo-approver")
        .send()
        .await
        .unwrap();
    assert!(
        approved.status().is_success(),
        "{:?}",
        approved.text().await
    );
    let url = format!("{command}/proposals/{id}");
    let done: serde_json::Value =
        testkit::eventually(Duration::from_secs(30), "the command acked", || {
            let (http, url) = (http.clone(), url.clone());
            async move {
                let p: serde_json::Value = http
                    .get(&url)
                    .bearer_auth("demo-operator")
                    .send()
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()?;
                matches!(p["state"].as_str(), Some("acked" | "failed" | "timed_out")).then_some(p)
            }
        })
        .await;
    assert_eq!(done["state"], "acked", "{done}");
    testkit::eventually(Duration::from_secs(30), "the new gas in telemetry", || {
        let latest = latest.clone();
        async move {
            let g = gas(&reqwest::get(&latest).await.ok()?.json().await.ok()?)?;
            ((g - target).abs() < 1e-9).then_some(())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn up_runs_the_platform_on_embedded_defaults() {
    let data = tempfile::tempdir().unwrap();
    let broker_port = testkit::free_port();
    let up = start(
        &["up", "--data-dir", data.path().to_str().unwrap()],
        &[
            ("SIMCORP_BROKER_LISTEN", format!("127.0.0.1:{broker_port}")),
            (
                "SIMCORP_SIM_PUBLISHER_HTTP_ADDR",
                format!("127.0.0.1:{}", testkit::free_port()),
            ),
            (
                "SIMCORP_SIM_TWIN_HTTP_ADDR",
                format!("127.0.0.1:{}", testkit::free_port()),
            ),
        ],
    )
    .await;
    let stats: serde_json::Value = reqwest::get(format!("{}/stats", up.http))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["store"]["primary"], "sqlite");
    assert_eq!(stats["cache"]["kind"], "memory");

    // A device publishes to the embedded broker; the point is served back over HTTP.
    let config = mqtt::Config {
        url: format!("mqtt://127.0.0.1:{broker_port}"),
        ..mqtt::Config::default()
    };
    let device = mqtt::Publisher::connect(&config, "demo-device", Duration::from_secs(10))
        .await
        .unwrap();
    let payload = format!(
        r#"{{"session":"first-roast","seq":0,"ts":{},"channels":{{"bt":180.2,"et":210.5}}}}"#,
        model::now_ms()
    );
    device
        .publish("roasters/demo-1/telemetry", mqtt::QoS::AtLeastOnce, payload)
        .await
        .unwrap();
    assert!(device.flush(Duration::from_secs(10)).await);
    let url = format!("{}/sessions/first-roast/telemetry", up.http);
    let points: Vec<serde_json::Value> =
        testkit::eventually(Duration::from_secs(10), "the point", || {
            let url = url.clone();
            async move {
                let points: Vec<serde_json::Value> =
                    reqwest::get(&url).await.ok()?.json().await.ok()?;
                (!points.is_empty()).then_some(points)
            }
        })
        .await;
    assert_eq!(points[0]["channels"]["bt"], 180.2);

    // The default fleet of simulated roasters is roasting, live, into ingestion.
    let url = format!("{}/sessions?active=true", up.http);
    let active: Vec<serde_json::Value> = testkit::eventually(
        Duration::from_secs(20),
        "three live simulated roasts",
        || {
            let url = url.clone();
            async move {
                let s: Vec<serde_json::Value> = reqwest::get(&url).await.ok()?.json().await.ok()?;
                (s.len() >= 3).then_some(s)
            }
        },
    )
    .await;
    assert!(
        active.iter().any(|s| s["device_id"] == "sim-roaster-1"),
        "{active:?}"
    );

    // A newcomer closes the loop: propose a gas change as the demo operator, approve it as the
    // demo approver; driver-bridge's simulated roaster verifies it, applies it and acknowledges
    // it, and its telemetry shows the new setting.
    command_the_demo_roaster(&up.http).await;

    let banner = up.stop().await;
    assert!(banner.contains("demo-approver"), "{banner}");
    assert!(
        banner.contains(&format!("mqtt://127.0.0.1:{broker_port}")),
        "{banner}"
    );
    assert!(banner.contains("mosquitto_pub"), "{banner}");
    assert!(data.path().join("ingestion.db").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_ingestion_runs_against_real_servers() {
    if !testkit::require(
        Server::Postgres,
        "serve_ingestion_runs_against_real_servers",
    ) || !testkit::require(
        Server::Mosquitto,
        "serve_ingestion_runs_against_real_servers",
    ) {
        return;
    }
    let db = TestDatabase::create().await;
    let data = tempfile::tempdir().unwrap();
    let serve = start(
        &[
            "serve",
            "ingestion",
            "--mqtt",
            &Server::Mosquitto.url(),
            "--postgres",
            &db.url,
        ],
        &[
            ("SIMCORP_DATA_DIR", data.path().display().to_string()),
            ("SIMCORP_MQTT_CLIENT_ID", testkit::unique_name("ingestion")),
            // Its own share group, so it takes no other test's messages on the shared broker.
            ("SIMCORP_INGESTION_SHARE_GROUP", testkit::unique_name("g")),
        ],
    )
    .await;
    let stats: serde_json::Value = reqwest::get(format!("{}/stats", serve.http))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["store"]["primary"], "postgres");
    serve.stop().await;
}

/// Runs `simcorp migrate <args>` on defaults (no configuration from the caller's environment);
/// its output, one line per domain.
async fn migrate(args: &[&str]) -> Vec<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_simcorp"))
        .arg("migrate")
        .args(args)
        .env_remove("SIMCORP_CONFIG")
        .env_remove("SIMCORP_POSTGRES_URL")
        .env_remove("SIMCORP_DATA_DIR")
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(lines.len(), store::domains().len(), "{lines:?}");
    lines
}

/// Each domain's line says `applied …` on a first run and `up to date` on the next.
fn assert_reported(lines: &[String], first: bool) {
    for (line, domain) in lines.iter().zip(store::domains()) {
        let what = if first { ": applied " } else { ": up to date " };
        let want = format!("{}{what}", domain.name());
        assert!(line.contains(&want), "{line:?} should contain {want:?}");
    }
}

#[tokio::test]
async fn migrate_applies_every_domain_to_postgres_once() {
    let test = "migrate_applies_every_domain_to_postgres_once";
    if !testkit::require(Server::Postgres, test) {
        return;
    }
    let db = TestDatabase::create().await;
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let history = || async {
        let mut all = Vec::new();
        for d in store::domains() {
            let versions: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT version FROM {} ORDER BY version",
                d.history_table()
            )))
            .fetch_all(&pool)
            .await
            .unwrap();
            all.push(versions);
        }
        all
    };

    let first = migrate(&["--postgres", &db.url]).await;
    assert_reported(&first, true);
    assert!(first[0].starts_with("PostgreSQL: "), "{first:?}");
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables
         WHERE tablename IN ('telemetry', 'sessions', 'dead_letters', 'device_sessions')
         ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        tables,
        ["dead_letters", "device_sessions", "sessions", "telemetry"]
    );
    let applied = history().await;
    for (versions, d) in applied.iter().zip(store::domains()) {
        let want: Vec<i64> = d
            .migrator(store::Backend::Postgres)
            .iter()
            .map(|m| m.version)
            .collect();
        assert_eq!(versions, &want, "{}", d.name());
    }

    let second = migrate(&["--postgres", &db.url]).await;
    assert_reported(&second, false);
    assert_eq!(history().await, applied);
    pool.close().await;
}

#[tokio::test]
async fn migrate_applies_every_domain_to_sqlite_once() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_str().unwrap();
    assert_reported(&migrate(&["--data-dir", dir]).await, true);
    let second = migrate(&["--data-dir", dir]).await;
    assert_reported(&second, false);
    for d in store::domains() {
        let path = data.path().join(d.sqlite_file());
        assert!(path.exists(), "{}", path.display());
        assert!(
            second
                .iter()
                .any(|l| l.contains(&path.display().to_string())),
            "{second:?}"
        );
    }
    let url = format!(
        "sqlite://{}",
        data.path().join(store::TELEMETRY.sqlite_file()).display()
    );
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master
         WHERE name IN ('telemetry', 'sessions', 'dead_letters') ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(tables, ["dead_letters", "sessions", "telemetry"]);
    pool.close().await;
}

#[tokio::test]
async fn a_misspelt_setting_is_refused_with_a_clear_message() {
    let out = Command::new(env!("CARGO_BIN_EXE_simcorp"))
        .args(["migrate"])
        .env("SIMCORP_POSTGRES_MAX_CONECTIONS", "4")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("max_conections"), "{err}");
}
