//! The live roast view in a real headless Chromium: a simulated roast started over MQTT appears
//! among the roasts running now, its curve grows as points are pushed (SSE, no reload), its
//! CHARGE and TP marks show up, its reference is drawn as a band, and the page fetches nothing
//! from anywhere but the service.

use std::time::Duration;

use serde_json::json;
use testkit::browser::{self, Browser};
use testkit::roaster::{Device, SimRoast};

use crate::common::{Platform, require};

const POINTS: &str = "Number(document.getElementById('chart').dataset.points)";

#[tokio::test(flavor = "multi_thread")]
async fn a_roast_started_over_mqtt_grows_live_in_the_browser() {
    let test = "a_roast_started_over_mqtt_grows_live_in_the_browser";
    if !require(test) || !browser::available_or_skip(test) {
        return;
    }
    let platform = Platform::start().await;
    let app = platform.analytics().await;
    let page = Browser::start().await.unwrap();
    page.goto(&app.url("/")).await.unwrap();
    page.wait_until(
        "document.getElementById('conn').textContent === 'live'",
        Duration::from_secs(10),
    )
    .await
    .unwrap();

    let device = Device::connect(&platform.broker.url()).await;
    let r = SimRoast::new("roaster-view", "roast-view", 31)
        .with_start(json!({"reference": "sim-twin:medium", "batch_g": 4000}));
    device.send(&r.device, "session", &r.start).await;
    device.points(&r, 0..60).await;
    let wait = Duration::from_secs(20);
    page.wait_until(
        "document.querySelector('#active li[data-session=\"roast-view\"]') !== null",
        wait,
    )
    .await
    .unwrap();
    page.wait_until(&format!("{POINTS} >= 60"), wait)
        .await
        .unwrap();
    let before: u64 = page.eval(POINTS).await.unwrap();

    // Pushed, not fetched: the curve grows with every frame published.
    device.points(&r, 60..240).await;
    page.wait_until(&format!("{POINTS} >= 240"), wait)
        .await
        .unwrap();
    let after: u64 = page.eval(POINTS).await.unwrap();
    assert!(after > before, "{before} → {after}");
    for kind in ["charge", "turning_point"] {
        page.wait_until(
            &format!("document.querySelector('#chart .mark[data-kind=\"{kind}\"]') !== null"),
            wait,
        )
        .await
        .unwrap_or_else(|e| panic!("{kind} mark: {e}"));
    }
    page.wait_until("document.getElementById('refband') !== null", wait)
        .await
        .unwrap();
    page.wait_until(
        "document.getElementById('ref').textContent.includes('sim-twin:medium')",
        wait,
    )
    .await
    .unwrap();
    let title = page.text("#name").await.unwrap();
    assert_eq!(title, "roaster-view · roast-view");

    // Every resource the page loaded came from the service itself.
    let origins: Vec<String> = page
        .eval("performance.getEntriesByType('resource').map(e => new URL(e.name).origin)")
        .await
        .unwrap();
    let own = app.url("").trim_end_matches('/').to_owned();
    assert!(origins.iter().all(|o| *o == own), "{origins:?} (own {own})");
    let errors = page.console_errors().await.unwrap();
    assert!(errors.is_empty(), "{errors:?}");

    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("live-view.png");
    page.screenshot(&shot).await.unwrap();
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "{} bytes",
        png.len()
    );

    // The rest of the roast: every event marked, the phases complete.
    device.points(&r, 240..r.points.len()).await;
    device.send(&r.device, "session", &r.end).await;
    for kind in ["dry_end", "fc_start", "drop"] {
        page.wait_until(
            &format!("document.querySelector('#chart .mark[data-kind=\"{kind}\"]') !== null"),
            Duration::from_secs(30),
        )
        .await
        .unwrap_or_else(|e| panic!("{kind} mark: {e}"));
    }
    page.wait_until("document.querySelector('#bar .development') !== null", wait)
        .await
        .unwrap();
    page.wait_until(
        "document.getElementById('summary').textContent.includes('development time ratio')",
        wait,
    )
    .await
    .unwrap();

    // A past roast opened beside it: here the same one, drawn again as the compared curve.
    page.eval::<serde_json::Value>(
        "(() => { const c = document.getElementById('compare'); \
           c.value = 'roaster-view|roast-view'; \
           c.dispatchEvent(new Event('change')); return c.value; })()",
    )
    .await
    .unwrap();
    page.wait_until(
        "(document.getElementById('compareline')?.getAttribute('d') || '').length > 100",
        wait,
    )
    .await
    .unwrap();
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("live-view-dropped.png");
    page.screenshot(&shot).await.unwrap();
    page.close().await.unwrap();
}
